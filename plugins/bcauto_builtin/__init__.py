"""bcauto's built-in components, registered through the ``bcauto`` entry points like any plugin."""
