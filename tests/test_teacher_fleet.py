"""Several teacher endpoints (`--base-url` given more than once): each request goes to the server
with the fewest in flight, a server that dies is taken out, and tried again later in the same run."""

from __future__ import annotations

import threading
import time

from common.teacher.backend_openai import OpenAITeacher

from openai_server import FakeOpenAI, Reply, good_json
from test_openai_teacher import config, make_request

REQUESTS = [make_request(i % 8) for i in range(40)]


def fleet(urls: list[str], **kw) -> OpenAITeacher:
    return OpenAITeacher(config(urls[0], base_url=urls, concurrency=4, max_retries=0, **kw))


def kill_after(server: FakeOpenAI, answers: int) -> threading.Thread:
    """Stop `server` (connections refused) once it has answered `answers` requests and holds one more."""

    def killer() -> None:
        while sum(server.answered.values()) < answers or server.inflight < 1:
            time.sleep(0.01)
        server.__exit__()

    thread = threading.Thread(target=killer)
    thread.start()
    return thread


def test_the_survivor_takes_every_worker_when_one_of_two_servers_dies():
    """All `concurrency` requests in flight go to the server left (with workers bound to a server,
    the dead one's share of them stopped with it)."""
    never, holder = threading.Event(), []
    def doomed_script(call):
        return Reply(good_json(call)) if sum(holder[0].answered.values()) < 2 else Reply(good_json(call), hold=never)
    with FakeOpenAI(lambda call: Reply(good_json(call), delay=0.05)) as steady:
        doomed = FakeOpenAI(doomed_script).__enter__()
        holder.append(doomed)
        killer = kill_after(doomed, 2)
        teacher = fleet([doomed.url, steady.url], retry_down_s=600)
        try:
            responses = list(teacher.generate(REQUESTS))
        finally:
            teacher.close()
            killer.join(10)
            never.set()
    assert len(responses) == len(REQUESTS) and all(r.error is None for r in responses)
    assert steady.peak == 4  # every worker on the survivor once the other was down


def test_a_dead_server_is_tried_again_and_takes_requests_when_back():
    """One of two servers dies mid-run and comes back on its port: after retry_down_s it is sent
    requests again, in the same run, and no request fails."""
    never = threading.Event()
    servers: list[FakeOpenAI] = []
    def first_life(call):
        return Reply(good_json(call)) if sum(servers[0].answered.values()) < 2 else Reply(good_json(call), hold=never)
    with FakeOpenAI(lambda call: Reply(good_json(call), delay=0.1)) as steady:
        servers.append(FakeOpenAI(first_life).__enter__())
        killer = kill_after(servers[0], 2)

        def restart() -> None:
            killer.join(10)
            servers.append(FakeOpenAI(port=servers[0].port).__enter__())

        restarter = threading.Thread(target=restart)
        restarter.start()
        teacher = fleet([servers[0].url, steady.url], retry_down_s=0.2)
        try:
            responses = list(teacher.generate(REQUESTS))
        finally:
            teacher.close()
            restarter.join(10)
            never.set()
            servers[-1].__exit__()
    assert len(responses) == len(REQUESTS) and all(r.error is None for r in responses)
    assert sum(servers[1].answered.values()) >= 2 and teacher.endpoints[0].down is None
