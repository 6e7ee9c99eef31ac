"""The study files shipped with bcauto; installed as the package ``bcauto.studies`` (see pyproject.toml)."""
