"""The leaked-task check fails a test that leaves an asyncio task running, and only such a test."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

LEAKY = """
import asyncio

import pytest

pytest_plugins = ["tests.leaked_tasks"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_leaks_a_task():
    asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="forgotten")


@pytest.mark.anyio
async def test_awaits_its_task():
    await asyncio.create_task(asyncio.sleep(0))


@pytest.mark.anyio
async def test_cancels_its_task_without_awaiting_it():
    asyncio.create_task(asyncio.sleep(3600)).cancel()


@pytest.fixture
async def server(anyio_backend):
    task = asyncio.create_task(asyncio.sleep(3600), name="fixture_server")
    yield task
    # Forgets to stop it.


@pytest.mark.anyio
async def test_fixture_leaks_a_task(server):
    pass


def test_asyncio_run_leaks_a_task():
    async def main():
        asyncio.create_task(asyncio.sleep(3600), name="run_forgotten")

    asyncio.run(main())


def test_asyncio_run_cleans_up():
    async def main():
        await asyncio.sleep(0)

    asyncio.run(main())
"""


@pytest.mark.slow
def test_a_leaked_task_fails_its_test(pytester: pytest.Pytester) -> None:
    """A task left pending fails its test (or errors it, from a fixture); tidy tests pass."""
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rfE")
    result.assert_outcomes(passed=4, failed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_fixture_leaks_a_task*",
            "*left running after the test's teardown*: fixture_server (sleep)*",
            "*_ test_leaks_a_task _*",
            "*left running after the test's call*: forgotten (sleep)*",
            "*_ test_asyncio_run_leaks_a_task _*",
            "*left running after the test's call*: run_forgotten (sleep)*",
        ]
    )
