"""Dataset adapters, each reading its dataset's own published on-disk format (never
downloading), plus the embedded ``synthetic`` generator.

| name | format | coarse level |
|---|---|---|
| ``synthetic`` | generated | its groups |
| ``imagefolder`` | ``train/<class>/**``, ``test/<class>/**`` | – |
| ``cub`` | CUB-200-2011 official text files | bird group word (derived) |
| ``cars`` | Stanford Cars devkit ``.mat`` | make (derived) |
| ``aircraft`` | FGVC-Aircraft ``images_*_{train,val,test}.txt`` | family / manufacturer |
| ``flowers102`` | ``imagelabels.mat``, ``setid.mat`` | – |
| ``dogs`` | Stanford Dogs ``{train,test}_list.mat`` (or ``lists/``), ``Annotation/`` | – |
| ``dtd`` | ``labels/{train,val,test}<k>.txt`` | – |
| ``pets`` | Oxford-IIIT Pets ``annotations/*.txt`` | species |
| ``coarse`` | a view of any of the above | – (its labels *are* the coarse level) |
"""

from __future__ import annotations

from fgvcbench.api import hookimpl

from . import aircraft, cars, cub, dogs, dtd, flowers, folder, pets, synthetic, views


@hookimpl
def fgvcbench_datasets():
    return [m.SPEC for m in (synthetic, folder, cub, cars, aircraft, flowers, dogs, dtd, pets)] + [views.COARSE]
