"""A job is cancelled even when its cancellation is lost (python/cpython#86296 on 3.11): the
answer to its last CALL and the UpdateFirmware that replaces it arrive in one read."""

from __future__ import annotations

import asyncio
import sys

from chargeward.agent.tasks import cancel_and_wait


async def _job(answer: asyncio.Future[str], log: list[str], resumed: asyncio.Event) -> None:
    log.append(await asyncio.wait_for(answer, 10))  # as the ocpp package waits for CALLRESULTs
    resumed.set()  # the cancel was lost: the job went on
    await asyncio.sleep(3600)  # then waits for its retrieveDateTime
    log.append("ran on")


async def test_a_job_whose_cancellation_was_swallowed_is_still_ended() -> None:
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    log: list[str] = []
    resumed = asyncio.Event()
    job = asyncio.create_task(_job(answer, log, resumed))
    await asyncio.sleep(0)  # the job waits for its answer
    answer.set_result("answered")  # the answer and the cancel in the same loop iteration
    job.cancel()
    went_on = asyncio.create_task(resumed.wait())
    await asyncio.wait({job, went_on}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    went_on.cancel()
    lost = not job.done()  # True on 3.11: wait_for returned the answer, the cancel is gone
    assert lost == resumed.is_set()
    if sys.version_info < (3, 12):
        assert lost  # the bug this guards against, reproduced
    await asyncio.wait_for(cancel_and_wait(job, every=0.05), 2)
    assert job.cancelled() and "ran on" not in log
