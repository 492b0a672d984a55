from shared.logs import mask_phone, redact_processor


def test_phone_numbers_are_masked_everywhere() -> None:
    assert mask_phone("call 13812345678 now") == "call 138****5678 now"
    out = redact_processor(None, "info", {"event": "x", "reporter": {"phone": "13812345678", "name": "黄"},
                                          "note": "联系 13912345678", "secret": "s3cr3t",
                                          "uri": "amqp://gas:pa55@host/"})
    assert out["reporter"]["phone"] == "***"
    assert "13912345678" not in out["note"]
    assert out["secret"] == "***"
    assert "pa55" not in out["uri"]
