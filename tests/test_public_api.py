"""Everything ``hf_prefs.__all__`` promises can be imported from the top level."""

import hf_prefs


def test_every_public_name_resolves():
    missing = []
    for name in hf_prefs.__all__:
        try:
            getattr(hf_prefs, name)
        except (AttributeError, ImportError) as err:
            missing.append(f"{name}: {err}")
    assert not missing, missing


def test_unknown_name_is_an_attribute_error():
    try:
        hf_prefs.NoSuchThing  # noqa: B018
    except AttributeError as err:
        assert "NoSuchThing" in str(err)
    else:
        raise AssertionError("expected AttributeError")
