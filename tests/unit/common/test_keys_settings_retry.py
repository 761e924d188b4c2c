import threading

import pytest

from deskgen.common import settings
from deskgen.common.errors import FatalError, InvalidInputError
from deskgen.common.keys import check_object_key, generated_key, upload_key
from deskgen.common.models import resolve
from deskgen.common.retry import Backoff


def test_keys_are_derived_from_the_job_id():
    assert upload_key("job1", ".JPEG") == "uploads/job1/original.jpg"
    assert generated_key("job1", "ott_3d") == "generated/job1/ott_3d.png"


@pytest.mark.parametrize("key", ["../x", "a/../../b", "/abs", "a//b", "a\\b", "", "x/./y"])
def test_unsafe_object_keys_are_refused(key):
    with pytest.raises(InvalidInputError):
        check_object_key(key)


def test_a_bad_setting_names_its_variable(monkeypatch):
    monkeypatch.setenv("DESKGEN_HTTP_PORT", "not-a-port")
    with pytest.raises(FatalError, match="DESKGEN_HTTP_PORT"):
        settings.load(settings.RuntimeSettings)


def test_backoff_doubles_up_to_its_cap_and_stops_on_shutdown():
    backoff = Backoff(attempts=5, base_s=0.1, cap_s=0.5)
    assert 0.08 <= backoff.delay(1) <= 0.12
    assert 0.4 <= backoff.delay(10) <= 0.6
    stop = threading.Event()
    stop.set()
    assert backoff.sleep(1, stop) is False


def test_model_uris_resolve_or_fail_clearly(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"1")
    assert resolve(f"file://{tmp_path}/w.bin") == tmp_path / "w.bin"
    assert resolve("pkg://deskgen.common/schemas/defs.json").is_file()
    with pytest.raises(FatalError, match="not found"):
        resolve(f"file://{tmp_path}/missing")
    with pytest.raises(FatalError, match="unsupported"):
        resolve("ftp://x/y")
    with pytest.raises(FatalError, match="not installed"):
        resolve("pkg://no_such_package_here/x")
