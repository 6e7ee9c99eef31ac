"""How a dead worker's exit is told: the signal by name where there is one, the bare number otherwise."""

import signal

from bcauto.supervisor import describe_exit


def test_a_worker_killed_by_a_signal_is_told_by_the_signal_s_name():
    assert describe_exit(-signal.SIGKILL) == "worker process died from signal SIGKILL (killed: out of memory?)"
    assert describe_exit(-signal.SIGSEGV) == "worker process died from signal SIGSEGV"


def test_a_signal_number_without_a_name_and_a_plain_exit_code_are_told_as_numbers():
    assert describe_exit(-200) == "worker process died from signal 200"
    assert describe_exit(3) == "worker process exited with code 3"
