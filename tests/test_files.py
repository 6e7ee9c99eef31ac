import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from bcauto.files import write_text_whole, written_whole


def test_a_file_written_whole_replaces_the_old_one_with_the_usual_mode_and_leaves_nothing_beside_it(tmp_path):
    (tmp_path / "plain.txt").write_text("written the usual way")
    target = tmp_path / "record.json"
    target.write_text("old")
    write_text_whole(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "record.json"]
    assert stat.S_IMODE(os.stat(target).st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)


def test_a_write_that_fails_half_way_leaves_the_old_file_and_nothing_beside_it(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"the old model")
    with pytest.raises(OSError, match="No space"):
        with written_whole(target) as staged:
            assert staged.parent == tmp_path and staged.name.endswith("-model.keras")  # Keras checks the suffix
            staged.write_bytes(b"half a")
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"the old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_two_writers_of_one_file_at_once_each_finish_their_own(tmp_path):
    target = tmp_path / "features.npz"
    with written_whole(target) as first, written_whole(target) as second:
        assert first != second
        first.write_text("first, whole")
        second.write_text("second, whole")
    assert target.read_text() == "first, whole"  # the last to finish is the one kept, whole
    assert [p.name for p in tmp_path.iterdir()] == ["features.npz"]


def test_a_write_removes_what_a_killed_writer_of_the_same_file_left_and_nothing_that_may_be_in_use(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is free now (a new process could take it: the test would then fail, not pass wrongly)
    host, target = socket.gethostname(), tmp_path / "features[1].npz"  # a glob character in the name
    abandoned = tmp_path / f".writing-{host}-{gone.pid}-0123abcd-features[1].npz"
    in_use = [
        tmp_path / f".writing-{host}-{os.getpid()}-0123abcd-features[1].npz",  # a live process: may be writing it now
        tmp_path / f".writing-{host}x-{gone.pid}-0123abcd-features[1].npz",  # another machine on a shared folder
        tmp_path / f".writing-{host}-{gone.pid}-0123abcd-other.npz",  # another file
    ]
    recent = tmp_path / f".writing-{host}-{gone.pid}-4567abcd-features[1].npz"  # same name, process numbers of another container
    for staged in [abandoned, *in_use, recent]:
        staged.write_text("half")
        if staged != recent:
            os.utime(staged, (time.time() - 3600, time.time() - 3600))
    in_use.append(recent)
    write_text_whole(target, "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, *(p.name for p in in_use)])
