"""The toolkit's own tests run pytest inside pytest to check the plugin's fixtures."""

pytest_plugins = ["pytester"]
