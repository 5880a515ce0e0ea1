"""A pytest plugin: a test that leaves an asyncio task running fails (kopf's check, for anyio).

Every loop a test runs on is closed by ``asyncio.Runner.close``: the anyio pytest plugin runs
each async test (and its async fixtures) on a fresh ``asyncio.Runner`` that it closes once the
last of them is done, and ``asyncio.run`` is a Runner too. Close cancels every task still
pending, silently, so a leaked task (a worker never joined, a poller never stopped) would go
unnoticed. This plugin looks at the pending tasks just before that close and fails the test:
during its call (the test fails) or during its fixtures' teardown (the test errors).

Not a leak: anyio's own runner task, a task already asked to stop (``cancel()`` called, not yet
awaited), and loops closed on other threads (the emulator's server thread owns its loop).
``tests/conftest.py`` imports the hooks; ``tests/test_leaked_tasks.py`` proves they fail a
leaking test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator

import pytest

# The anyio test runner's own task, pending for as long as its loop lives (anyio 4).
_ANYIO_RUNNER_TASK = "TestRunner._run_tests_and_fixtures"

_leaked: list[str] = []
_original_close: Callable[[asyncio.Runner], None] | None = None


def describe(task: asyncio.Task[object]) -> str:
    """Return a task's name, coroutine and where it is suspended."""
    coro = task.get_coro()
    what = getattr(coro, "__qualname__", repr(coro))
    frames = task.get_stack(limit=1)
    where = f" at {frames[0].f_code.co_filename}:{frames[0].f_lineno}" if frames else ""
    return f"{task.get_name()} ({what}){where}"


def is_leaked(task: asyncio.Task[object]) -> bool:
    """Return whether a task still pending at its loop's close was left running."""
    if task.done() or task.cancelling():
        return False
    return getattr(task.get_coro(), "__qualname__", "") != _ANYIO_RUNNER_TASK


def _checked_close(runner: asyncio.Runner) -> None:
    """Note the leaked tasks of a main-thread loop, then close it as asyncio does."""
    # Runner keeps its loop in _loop; get_loop() would create one for a runner never started.
    loop: asyncio.AbstractEventLoop | None = getattr(runner, "_loop", None)
    on_main = threading.current_thread() is threading.main_thread()
    if on_main and loop is not None and not loop.is_closed():
        _leaked.extend(describe(t) for t in asyncio.all_tasks(loop) if is_leaked(t))
    assert _original_close is not None
    _original_close(runner)


def _fail_on_leaks(when: str) -> None:
    if _leaked:
        found, _leaked[:] = list(_leaked), []
        pytest.fail(
            f"asyncio tasks left running after the test's {when} (cancelled at loop close): "
            + "; ".join(found),
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    """Wrap Runner.close for the whole run (once, however often configure is called)."""
    global _original_close
    if _original_close is None:
        _original_close = asyncio.Runner.close
        asyncio.Runner.close = _checked_close  # type: ignore[method-assign,assignment]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Put Runner.close back."""
    global _original_close
    if _original_close is not None:
        asyncio.Runner.close = _original_close  # type: ignore[method-assign,assignment]
        _original_close = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Start each test with no leak on record; a leak while setting up errors the test."""
    _leaked.clear()
    yield
    _fail_on_leaks("setup")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a test whose loop closed with tasks of its own still running."""
    yield
    _fail_on_leaks("call")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """Error a test whose fixtures' loop closed with tasks still running."""
    yield
    _fail_on_leaks("teardown")
