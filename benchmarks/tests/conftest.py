def pytest_configure(config):
    # the smoke tests carry @pytest.mark.timeout; keep --strict-markers happy
    # even where pytest-timeout is not installed
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test time limit")
