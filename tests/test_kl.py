"""KL controllers (paper: e = clip(KL/target - 1, ±0.2); beta <- beta * (1 + e * n_steps / horizon))."""

from __future__ import annotations

import pytest

from hf_prefs.core.kl import AdaptiveKLController, FixedKLController, adaptive_kl_update


def test_adaptive_sequence_matches_hand_computation():
    ctl = AdaptiveKLController(value=0.15, target=6.0, horizon=10_000)
    # n/horizon = 512/10000 = 0.0512. KL values and the error each produces:
    #   6.0 -> e = 0;  6.6 -> e = 0.1;  12 -> e = 1 clipped to 0.2;  3 -> e = -0.5 clipped to -0.2;  5.4 -> e = -0.1
    expected = [
        0.15,  # KL 6.0: unchanged
        0.15 * 1.00512,  # KL 6.6: 1 + 0.1 * 0.0512
        0.15 * 1.00512 * 1.01024,  # KL 12: 1 + 0.2 * 0.0512
        0.15 * 1.00512 * 1.01024 * 0.98976,  # KL 3: 1 - 0.2 * 0.0512
        0.15 * 1.00512 * 1.01024 * 0.98976 * 0.99488,  # KL 5.4: 1 - 0.1 * 0.0512
    ]
    got = [ctl.update(kl, n_steps=512) for kl in (6.0, 6.6, 12.0, 3.0, 5.4)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert ctl.value == pytest.approx(expected[-1], rel=1e-12)


def test_error_is_clipped_at_plus_minus_0_2():
    up = [adaptive_kl_update(1.0, kl, target=2.0, n_steps=100, horizon=1000) for kl in (2.4, 3.0, 100.0)]
    assert up == pytest.approx([1.0 + 0.2 * 0.1] * 3)  # 2.4/2 - 1 = 0.2 exactly: the clip boundary
    down = [adaptive_kl_update(1.0, kl, target=2.0, n_steps=100, horizon=1000) for kl in (1.6, 1.0, 0.0, -5.0)]
    assert down == pytest.approx([1.0 - 0.2 * 0.1] * 4)
    inside = adaptive_kl_update(1.0, 2.2, target=2.0, n_steps=100, horizon=1000)
    assert inside == pytest.approx(1.0 + 0.1 * 0.1)


def test_horizon_scaling():
    base = adaptive_kl_update(0.5, 12.0, target=6.0, n_steps=512, horizon=10_000)
    double_batch = adaptive_kl_update(0.5, 12.0, target=6.0, n_steps=1024, horizon=10_000)
    half_horizon = adaptive_kl_update(0.5, 12.0, target=6.0, n_steps=512, horizon=5_000)
    assert base - 0.5 == pytest.approx(0.5 * 0.2 * 0.0512)
    assert double_batch - 0.5 == pytest.approx(2 * (base - 0.5))
    assert half_horizon == pytest.approx(double_batch)


def test_fixed_stays_fixed():
    ctl = FixedKLController(0.03)
    for kl in (0.0, 100.0, -3.0, 6.0):
        assert ctl.update(kl, n_steps=32) == 0.03
    assert ctl.value == 0.03


def test_state_dict_roundtrip():
    ctl = AdaptiveKLController(0.15, 6.0, 10_000)
    ctl.update(20.0, 512)
    state = ctl.state_dict()
    other = AdaptiveKLController(1.0, 1.0, 1)
    other.load_state_dict(state)
    assert (other.value, other.target, other.horizon) == (ctl.value, 6.0, 10_000)
    assert other.update(3.0, 512) == ctl.update(3.0, 512)
    fixed = FixedKLController(0.1)
    fixed2 = FixedKLController(9.0)
    fixed2.load_state_dict(fixed.state_dict())
    assert fixed2.value == 0.1
    # a run resumed with the other adaptive_kl: named, not a KeyError (adaptive <- fixed) nor silently fixed
    before = other.value
    with pytest.raises(ValueError, match="checkpoint's beta is fixed, this run's is adaptive: resume with adaptive_kl: false"):
        other.load_state_dict(fixed.state_dict())
    with pytest.raises(ValueError, match=r"checkpoint's beta is adaptive \(kl_target 6.0\), this run's is fixed"):
        fixed2.load_state_dict(state)
    assert (other.value, fixed2.value) == (before, 0.1)  # unchanged by a refused load


def test_bad_target_or_horizon_raise():
    with pytest.raises(ValueError, match="target"):
        adaptive_kl_update(0.1, 1.0, target=0.0, n_steps=1, horizon=10)
    with pytest.raises(ValueError, match="horizon"):
        adaptive_kl_update(0.1, 1.0, target=1.0, n_steps=1, horizon=0)


def test_a_kl_that_is_not_a_finite_number_is_refused():
    """A NaN KL went through the clip (min/max keep a NaN) and made beta NaN for every later update; a NaN target
    passed the ``target <= 0`` check; a tensor KL gave a tensor beta."""
    for kl in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="KL must be finite to update beta"):
            adaptive_kl_update(0.1, kl, target=6.0, n_steps=32, horizon=10_000)
    with pytest.raises(ValueError, match="KL target must be > 0 and finite, got nan"):
        adaptive_kl_update(0.1, 1.0, target=float("nan"), n_steps=1, horizon=10)
    import torch

    beta = adaptive_kl_update(0.1, torch.tensor(6.3), target=6.0, n_steps=32, horizon=10_000)
    assert type(beta) is float and beta == pytest.approx(0.1 * (1 + 0.05 * 32 / 10_000), rel=1e-6)


def test_a_horizon_under_a_fifth_of_the_batch_is_refused():
    """1 - 0.2 * n/horizon <= 0 once n/horizon >= 5: one step below target would make beta 0 or negative."""
    assert adaptive_kl_update(1.0, 0.0, target=6.0, n_steps=32, horizon=7) == pytest.approx(1 - 0.2 * 32 / 7)
    with pytest.raises(ValueError, match=r"kl_horizon must be > 0 and > batch size / 5 = 6.4 .* with 6 one"):
        adaptive_kl_update(1.0, 0.0, target=6.0, n_steps=32, horizon=6)  # beta was 1 - 0.2 * 32/6 = -0.07
    with pytest.raises(ValueError, match="kl_horizon must be > 0"):
        adaptive_kl_update(1.0, 6.0, target=6.0, n_steps=32, horizon=0)


def test_a_resumed_controller_whose_settings_changed_is_refused():
    from hf_prefs.trainers.ppo_checkpoints import check_checkpoint_kl_settings

    with pytest.raises(ValueError, match=r"kl_coef 0.3 in the checkpoint, 0.5 now"):  # the 0.3 was kept, silently
        check_checkpoint_kl_settings(FixedKLController(0.3).state_dict(), FixedKLController(0.5))
    saved = AdaptiveKLController(0.15, 6.0, 10_000)
    saved.update(12.0, 512)  # beta moved: it is state, not a setting
    check_checkpoint_kl_settings(saved.state_dict(), AdaptiveKLController(0.15, 6.0, 10_000))
    with pytest.raises(ValueError, match=r"kl_horizon 10000 in the checkpoint, 5000 now"):
        check_checkpoint_kl_settings(saved.state_dict(), AdaptiveKLController(0.15, 6.0, 5_000))
    check_checkpoint_kl_settings(saved.state_dict(), FixedKLController(0.15))  # the kinds: load_state_dict's error
