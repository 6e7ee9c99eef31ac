"""Builders that fail on purpose, for error-path tests."""

from bcauto_builtin.backbones import keras_application


def FakeNet(**kwargs):
    raise OSError("URL fetch failure: no network")


def keras_application_error_builder():
    return keras_application(FakeNet)
