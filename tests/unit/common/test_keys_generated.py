"""A job's generated objects: the image of any valid preset name and the keep mask never share a key."""

import re

from hypothesis import given
from hypothesis import strategies as st

from deskgen.common.keys import check_object_key, generated_key, generated_mask_key

PRESET_NAMES = st.from_regex(re.compile(r"[a-z0-9_]{1,32}"), fullmatch=True)


def test_a_preset_named_mask_is_an_ordinary_preset_beside_the_keep_mask():
    image, mask = generated_key("job-1", "mask"), generated_mask_key("job-1")
    assert image == "generated/job-1/mask.png"
    assert image != mask and check_object_key(mask, "generated/job-1") == mask


@given(PRESET_NAMES)
def test_no_preset_name_gives_the_keep_masks_key(preset):
    assert generated_key("job-1", preset) != generated_mask_key("job-1")
