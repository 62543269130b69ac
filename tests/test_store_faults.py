"""Faults of the run store itself: each ends in one clear ``StoreError``, never a raw sqlite3 traceback.

Real faults where a test can make them (a damaged file, a lock held by another connection);
simulated ones are named as such: a read-only store through SQLite's own read-only mode (root
ignores file permissions, so ``chmod`` runs only for other users), a full disk through SQLite's
page limit, which makes SQLite itself answer "database or disk is full".
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from metanlp.cli import main
from metanlp.dashboard.store_fault import RESET_LABEL
from metanlp.dashboard.text import plain_markdown
from metanlp.engine import RunConfig
from metanlp.runs import database as database_module
from metanlp.runs.doctor import check_store, reset_store
from metanlp.runs.store import DATABASE_FILE, RunStore, StoreCorrupted, StoreError
from tests.conftest import TINY_ENCODER
from tests.test_pages import ROOT, TIMEOUT, assert_no_exception, button, page_test


def tiny_config() -> RunConfig:
    return RunConfig(method="protonet", n_way=3, k_shot=1, n_query=2, train_steps=2, eval_episodes=2,
                     encoder="scratch", encoder_options=dict(TINY_ENCODER), device="cpu")


def step_events(count: int) -> list[dict]:
    return [{"event": "step", "phase": "train", "step": step, "support_loss": 1.0, "query_loss": 2.0,
             "query_accuracy": 0.5} for step in range(1, count + 1)]


def filled_store(root: Path, runs: int = 2, steps: int = 1500) -> tuple[RunStore, list[str]]:
    """A store whose steps table spans many pages, closed cleanly (no WAL left beside it)."""
    store = RunStore(root)
    run_ids = [store.create_run(tiny_config(), name=f"run {index}") for index in range(runs)]
    for run_id in run_ids:
        store.add_events(run_id, step_events(steps))
    return store, run_ids


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite file " * 400)


def cut_header(path: Path) -> None:
    os.truncate(path, 100)


def garble_middle(path: Path) -> None:
    """Overwrite pages in the middle (the steps table); the runs table at the start stays readable."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size // 2 // 4096 * 4096)
        file.write(random.Random(0).randbytes(4 * 4096))


def read_everything(root: Path) -> None:
    store = RunStore(root)
    for record in store.list_runs():
        store.metrics(record.id)


@pytest.mark.parametrize("damage", [garbage, cut_header, garble_middle])
def test_a_damaged_database_raises_store_corrupted_and_is_never_written_to(tmp_path, damage):
    root = tmp_path / "store"
    filled_store(root)
    damage(root / DATABASE_FILE)
    before = (root / DATABASE_FILE).read_bytes()
    with pytest.raises(StoreCorrupted) as caught:
        read_everything(root)
    message = str(caught.value)
    assert str(root / DATABASE_FILE) in message and "doctor --reset-store" in message
    assert caught.value.kind == "corrupted"
    copy = pickle.loads(pickle.dumps(caught.value))  # errors cross process boundaries (workers)
    assert type(copy) is StoreCorrupted and str(copy) == message and copy.root == root
    with pytest.raises(StoreCorrupted):  # a second opener does not "repair" it by writing a schema over it
        read_everything(root)
    assert (root / DATABASE_FILE).read_bytes() == before


def test_the_cli_reports_a_damaged_store_in_one_line_with_exit_code_2(tmp_path, capsys):
    root = tmp_path / "store"
    _, run_ids = filled_store(root, runs=1, steps=1)
    garbage(root / DATABASE_FILE)
    code = main(["evaluate", "--run", run_ids[0], "--runs-dir", str(root), "--encoder", "scratch", "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.count("\n") == 0 and error.startswith("error: ") and "Traceback" not in error
    assert str(root / DATABASE_FILE) in error and "is damaged" in error


def test_doctor_finds_the_damage_and_reset_moves_it_aside_recovering_the_readable_runs(tmp_path, capsys):
    root = tmp_path / "store"
    _, run_ids = filled_store(root)
    garble_middle(root / DATABASE_FILE)
    damaged_bytes = (root / DATABASE_FILE).read_bytes()

    assert main(["doctor", "--runs-dir", str(root)]) == 1
    report = capsys.readouterr().out
    assert "is damaged" in report and "--reset-store" in report
    assert (root / DATABASE_FILE).read_bytes() == damaged_bytes  # checking changed nothing

    assert main(["doctor", "--runs-dir", str(root), "--reset-store"]) == 0
    output = capsys.readouterr().out
    assert "Moved aside" in output and "recovered 2 run(s)" in output
    kept = [path for path in root.iterdir() if path.name.startswith(f"{DATABASE_FILE}.damaged-") and
            not path.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged_bytes
    store = RunStore(root)
    assert sorted(record.id for record in store.list_runs()) == sorted(run_ids)
    assert check_store(root).healthy


def test_reset_of_an_unreadable_database_starts_fresh_and_keeps_the_run_folders(tmp_path, capsys):
    root = tmp_path / "store"
    _, run_ids = filled_store(root, runs=2, steps=1)
    garbage(root / DATABASE_FILE)
    assert main(["doctor", "--runs-dir", str(root), "--reset-store"]) == 1  # healthy database, orphaned folders
    output = capsys.readouterr().out
    assert "nothing could be read" in output
    assert "belong to no run in the database" in output and all(run_id in output for run_id in run_ids)
    assert RunStore(root).list_runs() == []
    assert all((root / "runs" / run_id / "config.json").is_file() for run_id in run_ids)


def test_reset_leaves_a_healthy_store_exactly_as_it_is(tmp_path):
    root = tmp_path / "store"
    _, run_ids = filled_store(root, runs=1, steps=1)
    result = reset_store(root)
    assert result.moved == [] and "not damaged" in result.lines()[0]
    assert [record.id for record in RunStore(root).list_runs()] == run_ids
    assert not [path for path in root.iterdir() if "damaged" in path.name]


def test_doctor_reports_folders_without_runs_and_done_runs_without_checkpoints(tmp_path, capsys):
    root = tmp_path / "store"
    store, (done, kept) = filled_store(root, runs=2, steps=1)
    store.set_status(done, "done")  # no checkpoint was ever saved
    stray = root / "runs" / "0123456789ab"
    stray.mkdir()
    assert main(["doctor", "--runs-dir", str(root)]) == 1
    report = capsys.readouterr().out
    assert "0123456789ab" in report and "belong to no run" in report
    assert f"Run {done} is done but its checkpoint folder" in report
    assert kept not in report  # a queued run without a checkpoint is no problem

    stray.rmdir()
    store.delete_run(done)
    assert main(["doctor", "--runs-dir", str(root)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_doctor_reports_a_running_run_whose_process_is_gone(tmp_path, capsys):
    import subprocess
    import sys

    store = RunStore(tmp_path / "store")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = store.create_run(tiny_config(), claimed_by=int(finished.stdout))  # that process has exited
    alive = store.create_run(tiny_config(), claimed_by=os.getpid())
    assert main(["doctor", "--runs-dir", str(store.root)]) == 1
    report = capsys.readouterr().out
    assert "marked running but no process runs them" in report and gone in report and alive not in report


def test_doctor_on_a_folder_that_does_not_exist_creates_nothing(tmp_path, capsys):
    assert main(["doctor", "--runs-dir", str(tmp_path / "none")]) == 0
    assert "the first run creates it" in capsys.readouterr().out
    assert not (tmp_path / "none").exists()


# ----- locks ----------------------------------------------------------------------------------------


def hold_lock(path: Path, begin: str, seconds: float, create_table: bool = False) -> threading.Thread:
    """Another connection takes a lock now and lets it go after ``seconds`` (in a thread)."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(begin)
    if create_table:
        connection.execute("CREATE TABLE another_openers_table (x)")

    def release() -> None:
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_an_opener_waits_while_another_process_is_midway_through_creating_the_store(tmp_path):
    # SQLite answers "locked" at once (no busy wait) when it must switch a database to WAL while
    # another connection is writing to it: the opener has to wait by itself.
    root = tmp_path / "store"
    root.mkdir()
    holder = hold_lock(root / DATABASE_FILE, "BEGIN IMMEDIATE", 0.5, create_table=True)
    started = time.monotonic()
    store = RunStore(root, timeout=10)
    assert time.monotonic() - started >= 0.4
    holder.join()
    assert store.get_run(store.create_run(tiny_config())).status == "queued"


def test_many_openers_of_a_new_store_at_once_all_succeed(tmp_path):
    root = tmp_path / "store"
    barrier, errors, created = threading.Barrier(6), [], []

    def open_and_create() -> None:
        barrier.wait()
        try:
            created.append(RunStore(root, timeout=20).create_run(tiny_config()))
        except Exception as error:  # collected: an assertion in a thread would go unseen
            errors.append(error)

    threads = [threading.Thread(target=open_and_create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(RunStore(root).list_runs()) == 6


def test_a_store_locked_beyond_the_timeout_names_the_file_and_what_to_do(tmp_path):
    root = tmp_path / "store"
    RunStore(root)
    holder = hold_lock(root / DATABASE_FILE, "BEGIN EXCLUSIVE", 1.0)
    with pytest.raises(StoreError) as caught:  # it gave up after 0.3 s: the lock was still held
        RunStore(root, timeout=0.3).create_run(tiny_config())
    assert caught.value.kind == "locked"
    assert str(root / DATABASE_FILE) in str(caught.value) and "more than 0.3 s" in str(caught.value)
    holder.join()
    assert list((root / "runs").iterdir()) == []  # the refused run left no folder behind


# ----- read-only and full ---------------------------------------------------------------------------


def test_a_read_only_store_simulated_with_sqlite_read_only_mode(tmp_path, monkeypatch):
    root = tmp_path / "store"
    _, run_ids = filled_store(root, runs=1, steps=3)
    real_connect = sqlite3.connect

    def read_only_connect(path, *args, **kwargs):
        kwargs.pop("uri", None)
        return real_connect(f"{Path(path).resolve().as_uri()}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(database_module.sqlite3, "connect", read_only_connect)
    store = RunStore(root)
    assert [record.id for record in store.list_runs()] == run_ids  # reading still works
    with pytest.raises(StoreError) as caught:
        store.create_run(tiny_config())
    assert caught.value.kind == "read_only"
    assert "is read-only" in str(caught.value) and str(root) in str(caught.value)
    assert [path.name for path in (root / "runs").iterdir()] == run_ids  # no half-created run


def test_a_read_only_runs_folder_simulated_by_a_refused_mkdir(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(StoreError) as caught:
        RunStore(tmp_path / "new")
    assert caught.value.kind == "read_only" and str(tmp_path / "new") in str(caught.value)


def test_a_read_only_runs_folder_for_real(tmp_path):
    root = tmp_path / "store"
    filled_store(root, runs=1, steps=1)
    root.chmod(0o555)
    try:
        try:
            (root / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("this user may write to read-only folders (root with CAP_DAC_OVERRIDE)")
        with pytest.raises(StoreError) as caught:
            RunStore(root).create_run(tiny_config())
        assert caught.value.kind == "read_only" and str(root) in str(caught.value)
    finally:
        root.chmod(0o755)


def test_a_full_disk_simulated_with_sqlite_page_limit(tmp_path, monkeypatch):
    root = tmp_path / "store"
    store, (run_id,) = filled_store(root, runs=1, steps=10)
    real_connect = sqlite3.connect

    def small_disk_connect(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite answers SQLITE_FULL beyond it
        return connection

    monkeypatch.setattr(database_module.sqlite3, "connect", small_disk_connect)
    with pytest.raises(StoreError) as caught:
        store.add_events(run_id, step_events(5000))
    assert caught.value.kind == "disk_full"
    assert str(root) in str(caught.value) and "free some space" in str(caught.value)
    assert len(store.metrics(run_id)) == 10  # the batch was rolled back whole; what was stored is kept


def test_a_full_disk_on_the_run_folder_simulated_by_a_refused_write(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "store")

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(StoreError) as caught:
        store.create_run(tiny_config())
    assert caught.value.kind == "disk_full" and "is full" in str(caught.value)
    assert store.list_runs() == []  # no run queued whose files could not be written
    assert list((tmp_path / "store" / "runs").iterdir()) == []


# ----- pages ----------------------------------------------------------------------------------------

STORE_PAGES = ["home", "train", "runs", "attention", "live", "leaderboard"]




def store_page(name: str):
    """``name``'s page through app.py (the Leaderboard is not in test_pages' list)."""
    if name != "leaderboard":
        return page_test(name)
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    app.switch_page("pages/6_Leaderboard.py")
    return app


@pytest.mark.parametrize("name", STORE_PAGES)
def test_every_page_shows_a_damaged_store_in_an_error_box_with_a_way_on(name, runs_dir):
    filled_store(runs_dir, runs=1, steps=1)
    garbage(runs_dir / DATABASE_FILE)
    app = store_page(name)
    app.run()
    assert_no_exception(app)
    boxes = [error.value for error in app.error]  # as drawn: Markdown punctuation escaped
    assert any(plain_markdown(runs_dir / DATABASE_FILE) in box and "damaged" in box for box in boxes), boxes
    assert any(element.label == RESET_LABEL for element in app.button)


def test_the_reset_button_moves_the_damaged_store_aside_and_the_page_works_again(runs_dir):
    filled_store(runs_dir, runs=1, steps=1)
    garbage(runs_dir / DATABASE_FILE)
    damaged_bytes = (runs_dir / DATABASE_FILE).read_bytes()
    app = store_page("runs")
    app.run()
    button(app, RESET_LABEL).click()
    app.run()
    assert_no_exception(app)
    assert not app.error, [error.value for error in app.error]
    assert any("Moved aside" in success.value for success in app.success)
    assert any("No runs yet" in info.value for info in app.info)  # a fresh, working store
    kept = [path for path in runs_dir.iterdir() if path.name.startswith(f"{DATABASE_FILE}.damaged-")
            and not path.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged_bytes


def test_a_disk_error_inside_the_live_runs_view_is_shown_not_raised(runs_dir, monkeypatch):
    # Simulated: reading metrics fails as SQLite does when the disk gives out mid-page; the
    # curves are drawn by a fragment, which reruns on its own, outside the page's own handler.
    from metanlp.runs.read_models import RunReadModels

    filled_store(runs_dir, runs=1, steps=3)

    def failing_metrics(self, run_id, phases=None):
        with self.database.faults():
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(RunReadModels, "metrics", failing_metrics)
    app = store_page("runs")
    app.run()
    assert_no_exception(app)
    assert any("could not be read or written" in error.value for error in app.error)
    assert not any(element.label == RESET_LABEL for element in app.button)  # not a damaged database


def test_a_store_fault_midway_through_a_page_ends_in_the_error_box_of_app_py(runs_dir, monkeypatch):
    # Simulated: the Home page's table of recent runs fails to read as SQLite does on a failing
    # disk, after the store opened fine; app.py's handler around the page turns it into the box.
    from metanlp.dashboard import run_view

    filled_store(runs_dir, runs=1, steps=1)

    def failing_table(records):
        raise StoreError("The run store could not be read (simulated).", "disk_error", runs_dir, runs_dir)

    monkeypatch.setattr(run_view, "runs_table", failing_table)
    app = store_page("home")
    app.run()
    assert_no_exception(app)
    assert any("could not be read" in error.value for error in app.error)


def test_launch_on_a_full_disk_simulated_by_a_refused_write_shows_the_error_box(runs_dir, monkeypatch):
    from tests.test_pages import widget

    app = store_page("train")
    app.run()
    widget(app.selectbox, "Encoder").set_value("scratch")
    widget(app.number_input, "Training steps").set_value(3)
    app.run()

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", no_space)
    button(app, "Launch").click()
    app.run()
    assert_no_exception(app)
    assert any("is full" in error.value and "free some space" in error.value for error in app.error)
    assert RunStore(runs_dir).list_runs() == []


def test_a_runs_folder_that_is_a_file_gives_a_store_error_and_a_doctor_problem(tmp_path, capsys):
    path = tmp_path / "runs"
    path.write_text("not a folder", encoding="utf-8")
    with pytest.raises(StoreError) as caught:
        RunStore(path)
    assert caught.value.kind == "not_a_folder" and str(path) in str(caught.value)
    assert main(["doctor", "--runs-dir", str(path)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().out
