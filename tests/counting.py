"""Counting what the simulated runner runs, so that a resume that redoes an episode can be
told from one that reads it back."""

from __future__ import annotations


def count_episodes(monkeypatch) -> list[tuple[str, int]]:
    """(policy, run) of every episode the runner runs from now on (in-process: the tests
    pass ``workers=1``)."""
    import scalelab.experiments.runner as runner

    ran: list[tuple[str, int]] = []
    real = runner.run_episode

    def counting(cfg, resolved, policy_index, run, *args, **kwargs):
        ran.append((cfg.policies[policy_index].display, run))
        return real(cfg, resolved, policy_index, run, *args, **kwargs)

    monkeypatch.setattr(runner, "run_episode", counting)
    return ran
