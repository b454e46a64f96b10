"""The projector trainer's parts (settings, step, data, run directory) stay importable under the old module path,
as the same objects."""

from __future__ import annotations

from latent_darm.training import projector_config, projector_data, projector_run, projector_step, projector_trainer


def test_every_public_name_of_the_parts_is_reexported_by_the_trainer():
    for part in (projector_config, projector_data, projector_run, projector_step):
        public = [
            n
            for n, v in vars(part).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == part.__name__
        ]
        constants = (int, str, tuple, frozenset)
        public += [
            n for n, v in vars(part).items() if n.isupper() and isinstance(v, constants) and not isinstance(v, bool)
        ]
        for name in public:
            assert getattr(projector_trainer, name) is getattr(part, name), f"{part.__name__}.{name}"
        assert set(public) - set(projector_trainer.__all__) <= {"ADAPTER_DIR"}  # the factory's, imported
    assert projector_trainer.train_projector.__module__ == projector_trainer.__name__
