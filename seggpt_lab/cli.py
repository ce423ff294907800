"""Entry points: `seggpt-lab` (LightningCLI: fit / validate / test / predict) and `seggpt-lab-data`.

The one place that imports both packages; it owns nothing but wiring.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """`seggpt-lab fit|validate|test|predict --config recipes/....yaml`; tests and notebooks call `main([...])`."""
    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def data_main(args: list[str] | None = None) -> None:
    """`seggpt-lab-data`: converting datasets to shards (issue #3) will live here."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="seggpt-lab-data", description="Convert segmentation datasets to seggpt-lab shards.")
    parser.parse_args(args)
    parser.print_help()


if __name__ == "__main__":
    main()
