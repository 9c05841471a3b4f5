"""Logging: the rotating file in the user log dir, and no secret in any line."""

from __future__ import annotations

import logging
import logging.handlers

from base import logs, paths


def test_redact_hides_keys_tokens_and_authorization_values():
    logs.register_secret("my-very-own-server-key")
    text = ("Authorization: Bearer ek_abc123SECRETvalue456 key sk-proj-0123456789abcdef "
            "server my-very-own-server-key {'authorization': 'Bearer xyz987secret'}")
    clean = logs.redact(text)
    for secret in ("ek_abc123SECRETvalue456", "sk-proj-0123456789abcdef", "my-very-own-server-key", "xyz987secret"):
        assert secret not in clean, clean
    assert clean.count("[redacted]") >= 4


def test_log_file_rotates_in_the_user_log_dir_and_is_redacted(private_home):
    path = logs.setup_logging(1, log_file="test.log", console=False)
    try:
        assert path is not None and path.parent == paths.log_dir()
        logging.getLogger("core.test").info("posting with Authorization: Bearer ek_live_0123456789abcd")
        try:
            raise RuntimeError("failed with key sk-live-0123456789abcdef")
        except RuntimeError:
            logging.getLogger("core.test").exception("boom")
        for handler in logging.getLogger().handlers:
            handler.flush()
        written = path.read_text()
        assert "posting with" in written and "boom" in written
        assert "ek_live_0123456789abcd" not in written and "sk-live-0123456789abcdef" not in written
        assert any(isinstance(h, logging.handlers.RotatingFileHandler) for h in logging.getLogger().handlers)
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()
