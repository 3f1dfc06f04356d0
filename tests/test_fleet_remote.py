"""The Python API (csd.fleet.Fleet) over local and remote workers together, against a real OpenSSH server on
127.0.0.1 (tests/sshd.py, the fixtures of test_remote.py): the same methods for both, waits that mix them, and
a remote failure raised as the local one would be."""

from __future__ import annotations

import asyncio
import os

import pytest

from csd.errors import HostUnreachable, NotRunning, TurnFailed, UsageError
from csd.fleet import Fleet, RemoteReply
from csd.remote import Record
from csd.states import State
from sshd import SSHD
from support import Env
from test_remote import Remote, far  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(not os.path.exists(SSHD), reason="sshd (Debian's openssh-server) is not installed; .ci/run installs it")


def run(coro):  # one event loop per test step: each Fleet is its own
    return asyncio.run(coro)


def test_one_fleet_drives_a_local_and_a_remote_worker_alike(env: Env, far: Remote) -> None:
    async def main() -> None:
        async with Fleet() as fleet:
            local, away = await asyncio.gather(fleet.launch("here", str(env.root)), fleet.launch("away", str(env.root), host="box"))
            assert isinstance(away, Record) and away.host == "box" and far.sessions() == ["away"]
            assert local.tmux_name == "here" and fleet.remote("here") is None
            assert await fleet.status("away") == State.IDLE
            reply = await fleet.converse("away", "REPLY:from the far side")
            assert isinstance(reply, RemoteReply) and reply.text() == "from the far side"
            assert reply.stop.name == "stop" and reply.prompt.name == "user_prompt_submit"
            assert reply.stop.line_no == 0 or reply.stop.line_no > reply.prompt.line_no
            assert "from the far side" in await reply.markdown()
            # a wait over both ends on whichever turn ends first, and --all on both
            await fleet.send("here", "SLEEP:30")
            ev = await fleet.send("away", "REPLY:quick")
            assert ev.name == "user_prompt_submit" and ev.line_no > 0
            async with asyncio.timeout(30):
                name, stop = await fleet.wait_any(["here", "away"])
            assert (name, stop.name) == ("away", "stop")
            assert [e.name for e in fleet.read_events("away")].count("stop") == 2
            assert "quick" in fleet.read_turn("away")
            await fleet.stop("here")
            async with asyncio.timeout(30):
                ended = await fleet.wait_all(["away"])
            assert [n for n, _ in ended] == ["away"]
            await fleet.stop("away")
            assert far.sessions() == [] and fleet.remote("away") is None
            assert not env.wdir.shim_path("away").exists()

    run(main())


def test_a_remote_failure_raises_what_the_local_one_would(env: Env, far: Remote) -> None:
    async def main() -> None:
        async with Fleet() as fleet:
            await fleet.launch("away", str(env.root), host="box")
            with pytest.raises(TurnFailed) as failed:
                await fleet.converse("away", "FAIL:rate_limit")
            assert "rate_limit" in str(failed.value) and failed.value.event.name == "stop_failure"  # type: ignore[attr-defined]
            with pytest.raises(UsageError) as usage:
                await fleet.send("away", "/notacommand")
            assert "host 'box'" in str(usage.value) and "notacommand" in str(usage.value)
            far.tmux("kill-session", "-t", "=away")  # died on its host
            assert await fleet.status("away") == State.GONE
            with pytest.raises(NotRunning) as gone:
                await fleet.send("away", "REPLY:anyone?")
            assert "host 'box'" in str(gone.value)
            with pytest.raises(NotRunning):
                await fleet.wait_for_turn("away")

    run(main())


def test_an_unreachable_host_is_said_as_such(env: Env, far: Remote) -> None:
    async def main() -> None:
        async with Fleet() as fleet:
            await fleet.launch("away", str(env.root), host="box")
            far.sshd.stop()
            with pytest.raises(HostUnreachable):
                await fleet.status("away")

    run(main())


def test_a_remote_worker_s_shim_and_the_api_run_bash_mode_on_its_host(env: Env, far: Remote) -> None:
    """``send --shell`` reaches the remote worker as ``--shell`` (it ran the text as a prompt before)."""
    import subprocess

    from test_remote import launch_far

    shim = launch_far("sh", env.root)
    proc = subprocess.run([str(shim), "send", "--shell", "touch MADE_BY_SHIM"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (env.root / "MADE_BY_SHIM").exists()

    async def main() -> None:
        async with Fleet() as fleet:
            await fleet.send("sh", "touch MADE_BY_API", shell=True)
            assert (env.root / "MADE_BY_API").exists()
            assert not [e for e in fleet.read_events("sh") if e.name == "user_prompt_submit"]  # bash mode: no prompt

    run(main())
