"""The electrodes' audit target: every site on skin the camera sees is drawn, and most sites are."""


def test_the_target_counts_sites_the_camera_sees_and_needs_most_of_them():
    from editors.electrodes.editor import MIN_FACING_SHARE, all_sites_drawn

    frontal = {"sites_requested": 22, "sites_facing": 22, "sites_drawn": 22}
    assert all_sites_drawn(frontal)
    assert not all_sites_drawn({**frontal, "sites_drawn": 21}), "a facing site that was not drawn fails"
    turned = {"sites_requested": 22, "sites_facing": 18, "sites_drawn": 18}
    assert all_sites_drawn(turned), "sites hidden by the head's turn are correctly absent"
    too_turned = int(MIN_FACING_SHARE * 22) - 1
    assert not all_sites_drawn({"sites_requested": 22, "sites_facing": too_turned, "sites_drawn": too_turned})
