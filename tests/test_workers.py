"""The workers dir: refusals, metas (v3 too), shims and resolving handles."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from csd.cli import main
from csd.errors import CsdError, UnknownWorker, UsageError
from csd.workers import Meta, WorkersDir, check_name


def test_dir_and_bin_are_created_0700(tmp_path: Path) -> None:
    w = WorkersDir(tmp_path / "w").ensure()
    assert os.stat(w.path).st_mode & 0o777 == 0o700
    assert os.stat(w.bin).st_mode & 0o777 == 0o700


def test_symlinked_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(CsdError, match="symlink"):
        WorkersDir(tmp_path / "link").ensure()


def test_foreign_owned_dir_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a dir to another user")
    os.chown(d, 65534, 65534)
    with pytest.raises(CsdError, match="owned by uid 65534"):
        WorkersDir(d).ensure()


def test_group_or_world_writable_dir_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(CsdError, match="lets group/others write"):
        WorkersDir(d).check()


def test_bin_planted_by_symlink_is_refused(tmp_path: Path) -> None:
    w = WorkersDir(tmp_path / "w").ensure()
    w.bin.rmdir()
    (tmp_path / "elsewhere").mkdir()
    w.bin.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CsdError, match="symlink"):
        w.ensure()


def test_refusal_reaches_the_cli_as_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "w"
    d.mkdir()
    os.chmod(d, 0o777)
    monkeypatch.setenv("CSD_WORKERS_DIR", str(d))
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lets group/others write" in err and str(d) in err


def test_v3_meta_reads(tmp_path: Path) -> None:
    w = WorkersDir(tmp_path / "w").ensure()
    sid = "11111111-2222-4333-8444-555555555555"
    w.meta_path(sid).write_text(json.dumps({"tmux_name": "api", "session_id": sid, "cwd": "/tmp", "started_at": "2026-01-01T00:00:00Z"}))
    m = w.read_meta(sid)
    assert (m.tmux_name, m.session_id, m.cwd, m.invocation) == ("api", sid, "/tmp", ())


def test_meta_round_trip_keeps_unknown_fields(tmp_path: Path) -> None:
    w = WorkersDir(tmp_path / "w").ensure()
    m = Meta("api", "s1", "/tmp", "now", ("csd", "launch"), "/sock", "/bin/claude", "0.1", {"future": 1})
    w.write_meta(m)
    back = w.read_meta("s1")
    assert back == m and back.extra == {"future": 1}
    assert not [p for p in w.path.iterdir() if p.name.endswith(".tmp")]


def test_resolve_by_name_or_session_id_with_did_you_mean(tmp_path: Path) -> None:
    w = WorkersDir(tmp_path / "w").ensure()
    w.write_meta(Meta("api-server", "aaaa", "/tmp"))
    assert w.resolve("api-server").session_id == "aaaa"
    assert w.resolve("aaaa").tmux_name == "api-server"
    with pytest.raises(UnknownWorker, match="did you mean 'api-server'"):
        w.resolve("api-sever")


def test_shim_execs_this_csd_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_WORKERS_DIR", str(tmp_path / "w"))
    w = WorkersDir().ensure()
    shim = w.write_shim("a-b_c")
    text = shim.read_text()
    assert text.startswith("#!/bin/sh\nexec /")
    assert "--worker a-b_c" in text
    assert os.stat(shim).st_mode & 0o700 == 0o700
    out = subprocess.run([str(shim), "session-id"], capture_output=True, text=True)
    assert out.returncode == 1 and "unknown worker 'a-b_c'" in out.stderr


@pytest.mark.parametrize("name", ["a.b", "a:b", "", "x" * 200, "-lead", "a b", "a/b", "ü"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="invalid worker name"):
        check_name(name)


@pytest.mark.parametrize("name", ["a", "api-2", "A_b-9", "x" * 64])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name


def test_removing_a_worker_waits_for_a_cost_write_and_takes_a_killed_ones_leftover(env) -> None:  # type: ignore[no-untyped-def]
    """A statusLine run holds the events file's lock while it writes the cost file; a stop removes the files under
    that lock (so the run's rename cannot bring a cost file back after them), and a run killed between its write
    and its rename leaves `<cost>.<pid>.tmp`, removed with the rest (seen once on the real Claude Code: stop
    hangs the pane up while its statusLine command runs)."""
    import fcntl
    import threading

    meta = env.add_worker("gone", [{"event": "session_start"}], live=False)
    cost = env.wdir.cost_path(meta.session_id)
    leftover = cost.with_name(cost.name + ".4242.tmp")
    leftover.write_text("{}")
    fd = os.open(env.wdir.events_path(meta.session_id), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a statusLine run in the middle of its write
    remover = threading.Thread(target=env.wdir.remove_files, args=(meta,))
    remover.start()
    remover.join(0.2)
    assert remover.is_alive() and env.wdir.events_path(meta.session_id).exists()  # waits for the write
    cost.write_text('{"sessions": {}}')  # the run's rename lands before it lets go
    os.close(fd)
    remover.join(5)
    assert not remover.is_alive()
    assert sorted(p.name for p in env.wdir.path.iterdir() if p.is_file()) == []
