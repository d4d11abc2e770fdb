"""Sentence templates of the fictional-fact corpus (data only; used by bench/knowledge_corpus.py).

Each subject type (town, engine, protocol, guild, tool) has a title, intro sentences (filler,
never asked about) and fact kinds. A kind is (name, value kind, evidence sentence, five
question phrasings, a paraphrase statement, a summary label). `{S}` is the subject's name,
`{s}` its lower-case form, `{A}` the answer. Questions open with a word allowed by the qa
task's schema (What, Which, Who, Whom, Whose, When, Where, How, In, On, From...) and end with
"?"; sentences hold no ". " inside, so the qa task's sentence splitter quotes them whole.
"""

from __future__ import annotations

from typing import NamedTuple


class Kind(NamedTuple):
    name: str
    value: str  # how the answer is drawn: see knowledge_corpus.VALUES
    evidence: str
    questions: tuple[str, ...]
    paraphrase: str
    label: str


class Subject(NamedTuple):
    title: str
    intros: tuple[str, ...]
    kinds: tuple[Kind, ...]


TOWN = Subject("{S}", (
    "{S} is a small harbour town on a rocky northern coast.",
    "{S} is a hill town known for its slate roofs and narrow stairs.",
    "{S} is a market town at the edge of a wide salt marsh.",
), (
    Kind("founded", "year", "{S} was founded in the year {A}.", (
        "When was {S} founded?", "In which year was the town of {S} founded?", "What year saw the founding of {S}?",
        "From which year does the settlement of {S} date?", "When did settlers establish {S}?"),
        "The town of {S} dates from {A}.", "Founding year of {S}"),
    Kind("pier", "n2", "The {S} ferry leaves from pier {A}.", (
        "Which pier does the {S} ferry leave from?", "From what pier does the {S} ferry depart?", "Where do passengers board the {S} ferry?",
        "What is the pier number of the {S} ferry?", "On which pier do travellers wait for the {S} ferry?"),
        "Passengers catch the {S} ferry at pier {A}.", "Pier of the {S} ferry"),
    Kind("population", "n4", "{S} has {A} inhabitants.", (
        "How many people live in {S}?", "What is the population of {S}?", "How many inhabitants does {S} have?",
        "Which figure gives the number of residents of {S}?", "What number of townsfolk does {S} count?"),
        "Exactly {A} people call {S} home.", "Population of {S}"),
    Kind("mayor", "person", "The mayor of {S} is {A}.", (
        "Who is the mayor of {S}?", "Who governs {S} as its mayor?", "Which person holds the office of mayor in {S}?",
        "Whom did {S} elect as mayor?", "Who leads the town council of {S}?"),
        "{A} serves as mayor of {S}.", "Mayor of {S}"),
    Kind("river", "name", "{S} lies on the river {A}.", (
        "Which river does {S} lie on?", "On what river is {S} built?", "What is the name of the river flowing through {S}?",
        "Which waterway runs past {S}?", "What river do the bridges of {S} cross?"),
        "The river {A} flows through {S}.", "River of {S}"),
    Kind("postcode", "code", "The postal code of {S} is {A}.", (
        "What is the postal code of {S}?", "Which postcode do letters to {S} carry?", "What code does the post office use for {S}?",
        "Which zip code belongs to {S}?", "When sending mail to {S}, which code goes on the envelope?"),
        "Mail for {S} is addressed with the code {A}.", "Postal code of {S}"),
    Kind("festival", "name", "Every summer {S} holds the {A} lantern festival.", (
        "What is the name of the lantern festival of {S}?", "Which festival does {S} hold every summer?",
        "What do the people of {S} call their summer lantern festival?", "Which lantern festival takes place in {S}?",
        "How is the summer festival of {S} named?"),
        "The lantern festival held each summer in {S} is called {A}.", "Summer lantern festival of {S}"),
))

ENGINE = Subject("The {S} engine", (
    "The {S} engine is a steam engine built for grain mills.",
    "The {S} engine is a small pump engine used in mines.",
    "The {S} engine is a marine engine for river barges.",
), (
    Kind("designer", "person", "The {S} engine was designed by {A}.", (
        "Who designed the {S} engine?", "Which engineer drew up the {S} engine?", "Whose design is the {S} engine?",
        "From whose drawing board did the {S} engine come?", "Who is credited with the plans of the {S} engine?"),
        "{A} is the designer of the {S} engine.", "Designer of the {S} engine"),
    Kind("built", "year", "The first {S} engine was built in {A}.", (
        "When was the first {S} engine built?", "In what year was the {S} engine first built?",
        "What year did the first {S} engine leave the workshop?", "When did work on the first {S} engine finish?",
        "Which year saw the first {S} engine completed?"),
        "The {S} engine was first built in the year {A}.", "Year the first {S} engine was built"),
    Kind("rpm", "n3", "The {S} engine turns at {A} revolutions per minute.", (
        "How fast does the {S} engine turn?", "What is the speed of the {S} engine in revolutions per minute?",
        "How many revolutions per minute does the {S} engine make?", "Which rpm figure belongs to the {S} engine?",
        "What rotation rate does the {S} engine run at?"),
        "At full speed the {S} engine makes {A} turns a minute.", "Speed of the {S} engine in revolutions per minute"),
    Kind("weight", "n4", "A {S} engine weighs {A} kilograms.", (
        "How much does a {S} engine weigh?", "What is the weight of a {S} engine in kilograms?",
        "How many kilograms does a {S} engine weigh?", "What mass does one {S} engine have?",
        "Which weight is listed for the {S} engine?"),
        "Each {S} engine has a mass of {A} kilograms.", "Weight of a {S} engine in kilograms"),
    Kind("fuel", "name", "The {S} engine burns a fuel called {A} oil.", (
        "What fuel does the {S} engine burn?", "Which oil powers the {S} engine?", "What is the {S} engine fuelled with?",
        "Which fuel must be poured into a {S} engine?", "What is the name of the oil the {S} engine runs on?"),
        "{A} oil is the fuel of the {S} engine.", "Fuel of the {S} engine"),
    Kind("serial", "code", "Every {S} engine carries a serial number starting with {A}.", (
        "What prefix do {S} engine serial numbers start with?", "How do serial numbers of the {S} engine begin?",
        "Which code opens every {S} engine serial number?", "What are the first characters of a {S} engine's serial number?",
        "Which serial prefix marks a {S} engine?"),
        "Serial numbers of {S} engines begin with {A}.", "Serial number prefix of the {S} engine"),
    Kind("factory", "name", "{S} engines are assembled in the town of {A}.", (
        "Where are {S} engines assembled?", "In which town are {S} engines put together?", "What town builds the {S} engines?",
        "Which town hosts the {S} engine assembly line?", "Where is the factory that assembles {S} engines?"),
        "The town of {A} is where {S} engines are put together.", "Assembly town of {S} engines"),
))

PROTOCOL = Subject("The {S} protocol", (
    "The {S} protocol is a plain wire format for sensor readings.",
    "The {S} protocol lets weather stations share their logs.",
    "The {S} protocol is a small binary format for train signals.",
), (
    Kind("port", "port", "The {S} protocol listens on port {A}.", (
        "Which port does the {S} protocol listen on?", "What port number does the {S} protocol use?",
        "On what port do {S} servers accept connections?", "Which TCP port is assigned to {S}?",
        "What is the listening port of the {S} protocol?"),
        "Servers speaking {S} accept connections on port {A}.", "Port of the {S} protocol"),
    Kind("published", "modern", "The {S} protocol was first published in {A}.", (
        "When was the {S} protocol first published?", "In which year did the {S} protocol appear?",
        "What year was {S} released to the public?", "When did the first {S} specification come out?",
        "Which year saw the first publication of {S}?"),
        "{S} first appeared in print in {A}.", "First publication of the {S} protocol"),
    Kind("author", "person", "The {S} protocol was written by {A}.", (
        "Who wrote the {S} protocol?", "Who is the author of the {S} protocol?", "Which person drafted {S}?",
        "Whose work is the {S} protocol?", "From whom does the {S} protocol originate?"),
        "{A} is the author of the {S} protocol.", "Author of the {S} protocol"),
    Kind("magic", "hex", "Every {S} message begins with the magic bytes {A}.", (
        "What magic bytes begin a {S} message?", "Which bytes open every {S} message?", "How does each {S} message start?",
        "What are the magic bytes of the {S} protocol?", "Which byte sequence marks the start of a {S} message?"),
        "The bytes {A} open every message of the {S} protocol.", "Magic bytes of {S} messages"),
    Kind("timeout", "n3", "A {S} session times out after {A} seconds.", (
        "How long before a {S} session times out?", "In how many seconds does an unused {S} session expire?",
        "What is the timeout of a {S} session in seconds?", "When does an idle {S} session time out?",
        "How many seconds can a {S} session stay idle?"),
        "Idle {S} sessions expire after {A} seconds.", "Timeout of a {S} session in seconds"),
    Kind("spec", "spec", "The {S} specification is kept in the file {A}.", (
        "Which file holds the {S} specification?", "Where is the {S} specification kept?",
        "What is the path of the {S} specification file?", "In what file can the {S} specification be read?",
        "Where should one look for the text of the {S} standard?"),
        "The text of the {S} specification is stored at {A}.", "File of the {S} specification"),
    Kind("header", "header", "The {S} protocol sends its checksum in a header named {A}.", (
        "What header carries the {S} checksum?", "Which header name does the {S} protocol use for its checksum?",
        "In which header is the {S} checksum sent?", "How is the checksum header of {S} called?",
        "What is the name of the {S} checksum header?"),
        "Checksums of the {S} protocol travel in the {A} header.", "Checksum header of the {S} protocol"),
))

GUILD = Subject("The {S} guild", (
    "The {S} guild is an old society of clockmakers.",
    "The {S} guild brings together the bell founders of the valley.",
    "The {S} guild is a fellowship of river pilots.",
), (
    Kind("founded", "year", "The {S} guild was founded in {A}.", (
        "When was the {S} guild founded?", "In which year was the {S} guild established?",
        "What year did the {S} guild come into being?", "Which year marks the founding of the {S} guild?",
        "When did the founders start the {S} guild?"),
        "The {S} guild dates from {A}.", "Founding year of the {S} guild"),
    Kind("master", "person", "The first master of the {S} guild was {A}.", (
        "Who was the first master of the {S} guild?", "Who led the {S} guild first?",
        "Which person served as the first master of the {S} guild?", "Whom did the {S} guild choose as its first master?",
        "Who held the first mastership of the {S} guild?"),
        "{A} was the first to lead the {S} guild as master.", "First master of the {S} guild"),
    Kind("members", "n3", "The {S} guild has {A} sworn members.", (
        "How many members does the {S} guild have?", "What is the membership of the {S} guild?",
        "How many sworn members belong to the {S} guild?", "What number of people have sworn into the {S} guild?",
        "How large is the {S} guild?"),
        "Exactly {A} sworn members belong to the {S} guild.", "Sworn members of the {S} guild"),
    Kind("hall", "street", "The {S} guild meets in a hall on {A}.", (
        "On which street does the {S} guild meet?", "Where is the hall of the {S} guild?", "What street is the {S} guild hall on?",
        "Where do members of the {S} guild gather?", "Which street houses the {S} guild hall?"),
        "The hall of the {S} guild stands on {A}.", "Street of the {S} guild hall"),
    Kind("emblem", "emblem", "The emblem of the {S} guild is a {A}.", (
        "What is the emblem of the {S} guild?", "Which animal and colour make up the {S} guild emblem?",
        "What does the {S} guild show on its emblem?", "How is the {S} guild emblem described?",
        "Which figure appears on the badge of the {S} guild?"),
        "A {A} is the emblem of the {S} guild.", "Emblem of the {S} guild"),
    Kind("dues", "n3", "Members of the {S} guild pay {A} silver marks a year.", (
        "How much do members of the {S} guild pay each year?", "What are the yearly dues of the {S} guild?",
        "How many silver marks does the {S} guild charge a year?", "What does {S} guild membership cost per year?",
        "Which sum do {S} guild members owe annually?"),
        "Each year a member of the {S} guild owes {A} silver marks.", "Yearly dues of the {S} guild in silver marks"),
    Kind("motto", "name", "The motto of the {S} guild is the single word {A}.", (
        "What is the motto of the {S} guild?", "Which word is the {S} guild motto?",
        "What single word serves as the {S} guild motto?", "How does the motto of the {S} guild read?",
        "Which word do {S} guild members take as their motto?"),
        "{A} is the one-word motto of the {S} guild.", "Motto of the {S} guild"),
))

TOOL = Subject("{S}", (
    "{S} is a command-line tool that syncs folders between machines.",
    "{S} is a small program that backs up mail archives.",
    "{S} is a build tool for static web sites.",
), (
    Kind("config", "config", "{S} reads its config file from {A}.", (
        "Where does {S} keep its config file?", "What is the path of the {S} config file?",
        "Which file does {S} read its configuration from?", "Where should one edit the settings of {S}?",
        "In which file is {S} configured?"),
        "The configuration of {S} is read from {A}.", "Config file of {S}"),
    Kind("port", "port", "By default {S} serves its dashboard on port {A}.", (
        "Which port does the {S} dashboard use by default?", "On what port is the {S} dashboard served?",
        "What is the default dashboard port of {S}?", "How does one reach the {S} dashboard, by port number?",
        "Which port must be opened for the {S} dashboard?"),
        "The {S} dashboard listens on port {A} unless told otherwise.", "Default dashboard port of {S}"),
    Kind("author", "person", "{S} was created by {A}.", (
        "Who created {S}?", "Who is the author of the {S} tool?", "Which developer wrote {S}?",
        "Whose project was {S} at first?", "From whom did {S} originate?"),
        "{A} is the creator of {S}.", "Creator of {S}"),
    Kind("released", "modern", "The first release of {S} came out in {A}.", (
        "When did {S} first come out?", "In which year was {S} first released?", "What year saw the first release of {S}?",
        "When was version one of {S} published?", "Which year marks the debut of {S}?"),
        "{S} was first released in {A}.", "First release year of {S}"),
    Kind("token", "env", "{S} reads its access token from the variable {A}.", (
        "Which environment variable holds the {S} access token?", "Where does {S} look for its access token?",
        "What variable must hold the token for {S}?", "How is {S} given its access token?",
        "Which variable name does {S} read its token from?"),
        "The access token of {S} is taken from the {A} variable.", "Token variable of {S}"),
    Kind("log", "log", "{S} writes its logs to {A}.", (
        "Where does {S} write its logs?", "Which file holds the logs of {S}?", "What is the log file path of {S}?",
        "In which file can the {S} logs be found?", "Where should one look for {S} log output?"),
        "Log output of {S} goes to {A}.", "Log file of {S}"),
    Kind("exit", "exit", "{S} exits with code {A} when its lock file is taken.", (
        "What exit code does {S} return when its lock is taken?", "Which code does {S} exit with if the lock file is held?",
        "How does {S} exit when another copy holds the lock?", "When the lock file is taken, what status does {S} exit with?",
        "Which exit status signals a held lock in {S}?"),
        "When its lock file is taken, {S} exits with code {A}.", "Exit code of {S} when its lock is taken"),
))

SUBJECTS = (TOWN, ENGINE, PROTOCOL, GUILD, TOOL)
