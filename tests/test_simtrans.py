"""SimTrans: pair construction, the head's widths, the weighting formulas (savg1, avg1),
g(a) and the graph term, pair F1, the code's per-epoch class batches, the noise simulator
and the weak_shot view, the alternating epochs' parity, the stages' cache keys, and every
variant end to end at smoke scale."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from fgvcbench.api import DataError, DatasetRequest, ImageList, Recipe
from fgvcbench.cli import app
from fgvcbench.plugins import get_registry
from fgvcbench.spec import canonical_json
from fgvcbench_plugins.simtrans import SIMNET_KEYS, SIMTRANS, scaled_epochs, stage_inputs
from fgvcbench_plugins.simtrans.classifier import SimTransLoss, falling_run, is_graph_epoch
from fgvcbench_plugins.simtrans.data import simulate_noise
from fgvcbench_plugins.simtrans.simnet import (Discriminator, RelationHead, all_pairs, code_f1_batches, code_pair_f1,
                                               epoch_batches, g, graph_loss, head_widths, pair_auroc, pair_f1,
                                               pair_targets, sample_weights)

from conftest import SHARED_DATA, records_by_variant, tiny_suite


def test_all_ordered_pairs_with_self_pairs_in_row_major_order():
    f = torch.tensor([[1.0], [2.0], [3.0]])
    pairs = all_pairs(f)
    assert pairs.shape == (9, 2)
    assert pairs.tolist() == [[a, b] for a in (1.0, 2.0, 3.0) for b in (1.0, 2.0, 3.0)]
    assert pair_targets(torch.tensor([0, 1, 0])).tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1]


def test_relation_head_widths_scale_with_the_feature_size_as_the_code():
    assert head_widths(2048) == (4096, 2048, 2048)          # ResNet-50: the paper's 4096/2048/2048
    head = RelationHead(8)
    logits, r = head(torch.randn(6, 16))
    assert logits.shape == (6, 2) and r.shape == (6, 8) and head.relation_dim == 8
    widths = [m.out_features for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [16, 8, 8, 2]                           # 2n, n, n, 2
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == 3
    assert [m.out_features for m in RelationHead(8, (6, 5, 4)).modules() if isinstance(m, torch.nn.Linear)] == \
        [6, 5, 4, 2]
    disc = Discriminator(head.relation_dim)
    assert [m.out_features for m in disc.modules() if isinstance(m, torch.nn.Linear)] == [8, 2]
    assert disc(r).shape == (6, 2)


def test_sample_weights_average_rows_and_columns_within_a_class_and_normalise():
    s = torch.tensor([[1.0, 0.8, 0.2, 0.9],
                      [0.6, 1.0, 0.1, 0.9],
                      [0.0, 0.4, 1.0, 0.9],
                      [0.9, 0.9, 0.9, 1.0]])
    labels = torch.tensor([0, 0, 0, 1])
    w = sample_weights(s, labels)
    raw = [0.5 * ((1.0 + 0.8 + 0.2) / 3 + (1.0 + 0.6 + 0.0) / 3),
           0.5 * ((0.6 + 1.0 + 0.1) / 3 + (0.8 + 1.0 + 0.4) / 3),
           0.5 * ((0.0 + 0.4 + 1.0) / 3 + (0.2 + 0.1 + 1.0) / 3)]
    mean = sum(raw) / 3
    assert torch.allclose(w[:3], torch.tensor([r / mean for r in raw]))
    assert w[3] == pytest.approx(1.0)                 # a class of one: its own mean
    assert w[:3].mean() == pytest.approx(1.0) and w[2] < w[0]   # the outlier weighs least
    assert torch.equal(sample_weights(s, labels, "savg1"), w)   # savg1 is the default (train_main.py)


def test_avg1_weights_use_the_row_alone():
    s = torch.tensor([[1.0, 0.8, 0.2],
                      [0.6, 1.0, 0.1],
                      [0.0, 0.4, 1.0]])
    labels = torch.tensor([0, 0, 0])
    raw = [(1.0 + 0.8 + 0.2) / 3, (0.6 + 1.0 + 0.1) / 3, (0.0 + 0.4 + 1.0) / 3]   # mean_j S_ij
    avg1 = sample_weights(s, labels, "avg1")
    assert torch.allclose(avg1, torch.tensor([r / (sum(raw) / 3) for r in raw]))
    assert not torch.allclose(avg1, sample_weights(s, labels, "savg1"))
    assert torch.allclose(sample_weights(s.T.contiguous(), labels, "savg1"), sample_weights(s, labels, "savg1"))
    with pytest.raises(ValueError, match="weight type"):
        sample_weights(s, labels, "den0.6")


def test_g_and_the_graph_term():
    assert float(g(torch.tensor(0.0))) == pytest.approx(0.0)
    assert float(g(torch.tensor(1.0))) == pytest.approx(1.0)
    assert float(g(torch.tensor(0.5))) == pytest.approx((math.exp(-2) - 1) / (math.exp(-4) - 1))
    assert float(g(torch.tensor(0.5))) > 0.5            # μ < 0: concave, mid similarities count early
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    a = torch.tensor([[1.0, 0.5, 0.0], [0.2, 1.0, 1.0], [0.0, 0.3, 1.0]])
    expected = sum(float(g(a[i, j])) * float(((z[i] - z[j]) ** 2).sum()) for i in range(3) for j in range(3)) / 9
    assert float(graph_loss(z, a)) == pytest.approx(expected, rel=1e-5)
    # μ = 0 is 0/0 in the formula: its limit g(a) = a (the code's relax returns A unchanged), not NaN
    assert torch.equal(g(a, mu=0.0), a)
    assert torch.allclose(g(a, mu=1e-6), a, atol=1e-5)      # the limit it is
    assert math.isfinite(float(graph_loss(z, a, mu=0.0)))


def test_pair_f1_counts_off_diagonal_pairs():
    labels = torch.tensor([0, 0, 1])
    perfect = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.1], [0.1, 0.1, 1.0]])
    assert pair_f1(perfect, labels)["f1"] == pytest.approx(100)
    everything_same = torch.ones(3, 3)
    scores = pair_f1(everything_same, labels)       # 2 true of 6 predicted positives
    assert scores["precision"] == pytest.approx(100 / 3) and scores["recall"] == pytest.approx(100)
    shy = perfect * 0.4                              # ranks pairs perfectly, never above 0.5
    assert pair_f1(shy, labels)["f1"] == 0 and pair_auroc(shy, labels) == pytest.approx(100)


def test_code_f1_batches_are_the_codes_ten_by_ten_test_batches():
    labels = torch.cat([torch.arange(12).repeat_interleave(15), torch.tensor([12] * 4)])   # class 12: 4 images
    batches = code_f1_batches(labels, torch.Generator().manual_seed(0))
    assert len(batches) == 10 and all(len(b) == 100 for b in batches)
    for b in batches:
        per_class = Counter(labels[b].tolist())
        assert len(per_class) == 10 and set(per_class.values()) == {10}      # 10 distinct classes × 10 images
        for c in per_class:
            distinct = len(set(b[labels[b] == c].tolist()))
            # without replacement from a class that has 10 or more; with replacement from the 4 of class 12
            assert distinct == 10 if c != 12 else distinct <= 4
    assert any(12 in labels[b].tolist() for b in batches)
    again = code_f1_batches(labels, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))           # drawn once: a seed fixes them
    few = code_f1_batches(torch.arange(4).repeat_interleave(12), torch.Generator().manual_seed(1))
    assert all(sorted(Counter(torch.arange(4).repeat_interleave(12)[b].tolist()).values()) == [10] * 4 for b in few)


class _Oracle(torch.nn.Module):
    """A relation head over one-hot class features: "same" iff the two are one class
    (``always``: "same" for every pair)."""

    def __init__(self, always: bool = False):
        super().__init__()
        self.always = always

    def forward(self, pairs):
        a, b = pairs.chunk(2, dim=1)
        same = torch.ones(len(pairs)) if self.always else (a * b).sum(1)
        return torch.stack([torch.full_like(same, 0.5), same], 1), pairs


def test_code_pair_f1_pools_every_ordered_pair_with_self_pairs():
    labels = torch.arange(10).repeat_interleave(12)
    feats = torch.nn.functional.one_hot(labels).float()
    batches = code_f1_batches(labels, torch.Generator().manual_seed(0))
    assert code_pair_f1(_Oracle(), feats, labels, batches) == pytest.approx(100)
    # "same" for all: precision = 1,000 same-class pairs of 10,000 (self-pairs counted) → F1 = 2·0.1/1.1
    assert code_pair_f1(_Oracle(always=True), feats, labels, batches) == pytest.approx(100 * 0.2 / 1.1)
    assert math.isnan(code_pair_f1(_Oracle(), feats, labels, []))


def test_epoch_batches_draw_every_image_at_most_once_from_few_classes():
    labels = torch.arange(30).repeat_interleave(7)                 # 210 images
    batches = epoch_batches(labels, 20, 50, torch.Generator().manual_seed(0))
    assert len(batches) == 210 // 50
    drawn = torch.cat(batches).tolist()
    assert len(drawn) == len(set(drawn))                           # without replacement within the epoch
    for rows in batches:
        assert len(Counter(labels[rows].tolist())) <= 20
    assert len(batches[0]) == 50
    web_labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 3)
    web = epoch_batches(web_labels, 2, 5, torch.Generator().manual_seed(1))
    assert len(web) == 12 // 5 and all(len(set(web_labels[b].tolist())) <= 2 for b in web)   # 2 classes a batch
    short = epoch_batches(torch.tensor([0, 0, 1, 1]), 1, 3, torch.Generator().manual_seed(0))
    assert len(short) == 1 and len(short[0]) == 2                  # one class of two: the batch ends short
    assert epoch_batches(torch.tensor([0, 1]), 2, 3, torch.Generator().manual_seed(0)) == []


def test_web_batches_follow_the_base_list_drawing_further_passes():
    from fgvcbench_plugins.simtrans.simnet import follow_base
    base = torch.arange(150).repeat_interleave(27)        # CUB's 150 base classes, 27 images each
    web = torch.arange(50).repeat_interleave(27)          # the simulated web set: the 50 novel classes
    g = torch.Generator().manual_seed(0)
    a = epoch_batches(base, 20, 50, g)
    zipped = list(zip(a, epoch_batches(web, 2, 50, g)))
    taken = sum(len(x) == len(y) for x, y in zipped)
    steps = follow_base(a, lambda: epoch_batches(web, 2, 50, g))
    assert len(steps) == len(a) and sum(len(x) == len(y) for x, y in steps) == sum(len(x) == 50 for x in a)
    assert taken < len(a) / 2                                # the code's zip: far fewer steps than the base list
    for x, y in steps:
        assert len(y) in (0, len(x)) and len(set(web[y].tolist())) <= 2
    # a web set that can never fill a base batch's length: paired with nothing (skipped), no endless drawing
    tiny = torch.tensor([0, 0, 1])
    assert all(len(y) == 0 for _, y in follow_base(a[:3], lambda: epoch_batches(tiny, 2, 50, g)))


def test_simnet_trains_as_many_steps_with_web_batches_as_without(monkeypatch):
    from fgvcbench_plugins.simtrans.simnet import SimNet, train_simnet

    class Flat(torch.nn.Module):
        num_features = 8

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 4 * 4, 8)

        def forward_features(self, x):
            return self.fc(x.float().flatten(1))

        def forward_head(self, x, pre_logits=False):
            return x

    class NoAugment:
        def train(self, x):
            return x.float()
    base_labels, web_labels = torch.arange(12).repeat_interleave(9), torch.arange(4).repeat_interleave(9)
    images = lambda n: torch.randint(0, 255, (n, 3, 4, 4), dtype=torch.uint8)  # noqa: E731
    runs = {}
    for name, web in (("base", False), ("follow_base", True), ("zip", True)):
        torch.manual_seed(0)
        history, _ = train_simnet(
            SimNet(Flat(), (16, 8, 8)), images(len(base_labels)), base_labels,
            images(len(web_labels)) if web else None, web_labels if web else None, NoAugment(),
            epochs=1, lr=0.01, domain_lr=0.01, momentum=0.9, weight_decay=0.0, beta=0.1, classes_per_batch=6,
            images_per_batch=18, web_classes_per_batch=2, device=torch.device("cpu"), seed=0, amp=False,
            web_epoch="zip" if name == "zip" else "follow_base")
        runs[name] = history[0]["steps"]
    assert runs["follow_base"] == runs["base"] > runs["zip"]


def _toy_train(n_classes=4, per_class=10) -> ImageList:
    labels = [c for c in range(n_classes) for _ in range(per_class)]
    return ImageList([f"/img/{c}_{i}.jpg" for i, c in enumerate(labels)], labels, [f"c{c}" for c in range(n_classes)],
                     boxes=[(float(i), 0.0, 5.0, 5.0) for i in range(len(labels))])


def test_noise_simulator_replaces_a_seeded_fraction_per_novel_class():
    train = _toy_train()
    ood = lambda n: [f"/ood/{i}.png" for i in range(n)]  # noqa: E731
    paths, labels, noise, boxes, taken = simulate_noise(train, [0, 2], 0.3, 0.5, 7, ood)
    assert len(paths) == 20 and labels == [0] * 10 + [2] * 10
    for c, part in ((0, noise[:10]), (2, noise[10:])):
        assert part.count("clean") == 7 and part.count("ood") == 2 and part.count("other_class") == 1
    by_label = {p: lab for p, lab in zip(train.paths, train.labels)}
    for p, lab, kind in zip(paths, labels, noise):
        if kind == "clean":
            assert by_label[p] == lab
        elif kind == "other_class":
            assert by_label[p] != lab                     # really another class's image
        else:
            assert p.startswith("/ood/")
    again = simulate_noise(train, [0, 2], 0.3, 0.5, 7, ood)
    other = simulate_noise(train, [0, 2], 0.3, 0.5, 8, ood)
    assert again == (paths, labels, noise, boxes, taken) and other[2] != noise and taken == set()
    assert simulate_noise(train, [0], 0.0, 0.5, 7, ood)[2] == ["clean"] * 10


def test_other_class_noise_comes_from_a_pool_no_stage_trains_on():
    train = _toy_train()
    pool = ImageList([f"/test/{i}.jpg" for i in range(5)], [1, 1, 3, 3, 3], train.class_names,
                     boxes=[(0.0, 0.0, 9.0, float(i)) for i in range(5)])
    ood = lambda n: [f"/ood/{i}.png" for i in range(n)]  # noqa: E731
    paths, _, noise, boxes, taken = simulate_noise(train, [0, 2], 0.4, 0.5, 7, ood, pool)
    others = [(p, b) for p, b, kind in zip(paths, boxes, noise) if kind == "other_class"]
    assert len(others) == 4 and all(p.startswith("/test/") for p, _ in others)
    assert len({p for p, _ in others}) == 4 and len(taken) == 4        # no pool image twice while it lasts
    assert all(b == pool.boxes[int(p[6])] for p, b in others)          # each keeps its own box
    # more noise than the pool holds: every pool image first, then repeats
    _, _, noise, _, taken = simulate_noise(train, [0, 2], 1.0, 0.0, 7, ood, pool)
    assert noise.count("other_class") == 20 and taken == set(range(5))


def _view(tmp_path, **options):
    registry = get_registry()
    base = {"of": "synthetic", "of_options": {"coarse": 2, "fine": 4, "train_per_class": 10, "test_per_class": 3,
                                              "image_size": 32}}
    spec = registry.datasets["weak_shot"]
    return spec.load_checked(DatasetRequest(root=options.pop("root", None), options={**spec.options, **base, **options},
                                    cache_dir=tmp_path, datasets=registry.datasets))


def test_weak_shot_view_puts_novel_classes_first_and_tests_only_them(tmp_path):
    splits = _view(tmp_path, novel_fraction=0.25, noise_rate=0.2)
    k = splits.train.info["num_novel"]
    assert k == 2 and len(splits.train.class_names) == 8
    novel = splits.train.meta["novel"]
    assert novel == [label < k for label in splits.train.labels]
    assert all(label < k for label in splits.test.labels) and len(splits.test) == 2 * 3
    noisy = [not c for c, n in zip(splits.train.meta["clean"], novel) if n]
    assert sum(noisy) == 2 * 2                         # round(0.2 · 10) per novel class
    assert all(c for c, n in zip(splits.train.meta["clean"], novel) if not n)     # base stays clean
    ood = [p for p, kind in zip(splits.train.paths, splits.train.meta["noise"]) if kind == "ood"]
    assert len(ood) == 2 and all(Path(p).exists() for p in ood)
    assert all(min(Image.open(p).size) >= 256 for p in ood)   # no blur from upsampling tells them apart
    # other-class noise: base classes' test images, which no stage trains on; the rest held out
    others = {p for p, kind in zip(splits.train.paths, splits.train.meta["noise"]) if kind == "other_class"}
    assert len(others) == 2 and not others & set(splits.train.paths[i] for i, n in enumerate(novel) if not n)
    held = splits.extra["base_test"]
    assert all(label >= k for label in held.labels) and len(held) == 6 * 3 - 2 and not others & set(held.paths)
    old = _view(tmp_path, novel_fraction=0.25, noise_rate=0.2, noise_pool="train")
    olds = [p for p, kind in zip(old.train.paths, old.train.meta["noise"]) if kind == "other_class"]
    assert olds and not set(olds) & set(old.extra["base_test"].paths) and len(old.extra["base_test"]) == 18
    with pytest.raises(DataError, match="noise_pool: 'web' is not one of base_test, train"):
        _view(tmp_path, noise_pool="web")


def test_weak_shot_view_reads_a_class_list_and_web_folders(tmp_path):
    names = _view(tmp_path).train.class_names
    listed = tmp_path / "novel.txt"
    listed.write_text(f"{names[-1]}\nnot_a_class")
    splits = _view(tmp_path, novel="novel.txt", root=tmp_path)
    assert splits.train.info["novel_classes"] == [names[-1]] and splits.train.class_names[0] == names[-1]
    web = tmp_path / "web" / names[-1]
    web.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 60, 0, 0)).save(web / f"{i}.jpg")
    splits = _view(tmp_path, novel="novel.txt", root=tmp_path, web_root="web")
    novel_noise = [kind for kind, n in zip(splits.train.meta["noise"], splits.train.meta["novel"]) if n]
    assert novel_noise == ["web"] * 3 and splits.train.meta["clean"][0] is None
    (tmp_path / "afile").write_text("")   # a file as web_root: said so, not "no images in afile/<class>"
    with pytest.raises(DataError, match=r"weak_shot web_root: .*afile is a file — give the folder that holds"):
        _view(tmp_path, novel="novel.txt", root=tmp_path, web_root="afile")
    listed.write_text("nothing_here")
    with pytest.raises(DataError, match="none of the 1 novel classes"):
        _view(tmp_path, novel="novel.txt", root=tmp_path)
    with pytest.raises(DataError, match="noise_rate"):
        _view(tmp_path, noise_rate=1.5)


CUB = SHARED_DATA / "CUB_200_2011_first50"
SPLIT = SHARED_DATA / "splits" / "cub_weakshot" / "testclasses.txt"


@pytest.mark.skipif(not (CUB.is_dir() and SPLIT.exists()), reason=f"real CUB images / split not present at {CUB}")
def test_weak_shot_view_of_real_cub_uses_the_zero_shot_split():
    registry = get_registry()
    spec = registry.datasets["weak_shot"]
    splits = spec.load(DatasetRequest(root=CUB, options={**spec.options, "of": "cub", "novel": "xian_cub"},
                                      cache_dir=Path("/tmp"), datasets=registry.datasets))
    k = splits.train.info["num_novel"]
    assert k == 10 and len(splits.train.class_names) == 50           # 10 novel, 40 base in the first 50
    listed = set(SPLIT.read_text().split())
    assert set(splits.train.class_names[:k]) <= listed and not set(splits.train.class_names[k:]) & listed
    # the test set: every test image of the novel classes, counted from the files
    def rows(name):
        return [line.split() for line in (CUB / name).read_text().splitlines() if line.strip()]
    novel_ids = {cid for cid, name in rows("classes.txt") if name in set(splits.train.class_names[:k])}
    train_flag = dict(rows("train_test_split.txt"))
    expected = sum(cid in novel_ids and train_flag[img] == "0" for img, cid in rows("image_class_labels.txt"))
    assert expected > 0 and all(label < k for label in splits.test.labels) and len(splits.test) == expected


def test_named_splits_are_the_codes_novel_classes():
    from fgvcbench_plugins.simtrans.data import _novel_classes
    from fgvcbench_plugins.simtrans.splits import SIMTRANS_AIRCRAFT, XIAN_CUB
    if SPLIT.exists():   # the shared copy of Xian et al.'s list
        assert list(XIAN_CUB) == SPLIT.read_text().split()
    assert len(set(XIAN_CUB)) == 50 and len(set(SIMTRANS_AIRCRAFT)) == 25
    # Air_helper.py: 25 of its 37 names by a fixed permutation; the rest of the 100 are base
    variants = sorted(SIMTRANS_AIRCRAFT) + [f"other-{i}" for i in range(75)]
    options = {"novel": "simtrans_aircraft", "novel_fraction": 0.25, "split_seed": 0}
    novel = _novel_classes(variants, options, None)
    assert novel == sorted(SIMTRANS_AIRCRAFT) and {"F/A-18", "Cessna 172", "757-300"} <= set(novel)
    assert "Boeing 717" not in novel and "A380" not in novel


def test_graph_term_on_the_codes_even_zero_based_epochs_first_epoch_included():
    # alternate_with_GCN.py: `if epoch % 2 == c0g1 (1): train_cls else train_gcn`, epochs from 0
    assert [is_graph_epoch(e) for e in range(5)] == [True, False, True, False, True]


def test_loss_weights_samples_and_adds_the_graph_term_when_given_an_adjacency():
    labels, weights = torch.tensor([0, 1, 0]), torch.tensor([2.0, 0.0, 1.0])
    loss = SimTransLoss(labels, weights, alpha=0.1, mu=-4.0, smoothing=0.0, device=torch.device("cpu"))
    logits = torch.randn(3, 2)
    z = torch.randn(3, 5) * 10
    rows = torch.arange(3)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert float(loss(logits, rows)) == pytest.approx(float((weights * ce).mean()), rel=1e-5)
    a = torch.full((3, 3), 0.7)
    expected = float((weights * ce).mean()) + 0.1 * float(graph_loss(z, a))
    assert float(loss(logits, rows, z, a)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(logits[[2, 0]], torch.tensor([2, 0]))) == pytest.approx(float((weights * ce)[[2, 0]].mean()))


def test_simnet_lr_halves_once_at_half_its_epochs_even_when_odd():
    from fgvcbench_plugins.simtrans.simnet import halving_interval, step_factor
    for epochs in (1, 2, 25, 50):
        factors = [step_factor(e, halving_interval(epochs)) for e in range(epochs)]
        assert min(factors) == (0.5 if epochs > 1 else 1.0), epochs
        assert factors.count(1.0) == -(-epochs // 2), epochs
    assert halving_interval(50) == 25      # the code's --lr_interval 25 of --num_epoch 50


def test_stage_epochs_keep_the_codes_proportions():
    # 3_train.sh: weighted CE 60, alternating 100; 0_pretrain.sh 30; 1_simnet.sh 50
    assert [scaled_epochs(60, s) for s in ("pretrain", "simnet", "weighted", "graph")] == [30, 50, 60, 100]
    assert [scaled_epochs(30, s) for s in ("pretrain", "simnet", "weighted", "graph")] == [15, 25, 30, 50]
    assert [scaled_epochs(1, s) for s in ("pretrain", "simnet", "weighted", "graph")] == [1, 1, 1, 2]


def _key(inputs: dict) -> str:
    return canonical_json(inputs)


def test_stage_cache_keys_hold_every_recipe_field_and_param_a_stage_reads():
    where = {"dataset": {"name": "weak_shot", "options": {}}, "backbone": {"name": "r", "pretrained": True}, "seed": 0}
    recipe = Recipe().replace(**SIMTRANS.recipe)
    params = {v: SIMTRANS.resolve_params(v) for v in SIMTRANS.variants}
    base = stage_inputs(params["full"], recipe, **where)
    for field, value in (("crop_scale_min", 0.3), ("policy_p", 0.5), ("random_erasing", 0.25), ("amp", False),
                         ("val_fraction", 0.2), ("image_size", 64), ("augment", "flip"), ("eval_image_size", 40),
                         ("channels_last", False), ("rotation_degrees", 10.0)):
        changed = stage_inputs(params["full"], recipe.replace(**{field: value}), **where)
        assert all(_key(changed[s]) != _key(base[s]) for s in ("pretrain", "simnet", "weighted")), field
    # stage 0 trains with its own batch size: a sweep of stage 2's reuses stage 0 and SimNet
    batch = stage_inputs(params["full"], recipe.replace(batch_size=4), **where)
    assert [_key(batch[s]) == _key(base[s]) for s in ("pretrain", "simnet", "weighted")] == [True, True, False]
    # the classifier's optimisation reaches SimNet only through its start (the stage-0 model)
    alone = {**params["full"], "simnet_init": "backbone"}
    from_backbone = stage_inputs(alone, recipe, **where)
    for field, value in (("lr", 0.5), ("momentum", 0.5), ("weight_decay", 0.0), ("label_smoothing", 0.1),
                         ("scheduler", "cosine"), ("step_size", 3), ("grad_clip", 1.0), ("optimizer", "adamw")):
        tuned = stage_inputs(alone, recipe.replace(**{field: value}), **where)
        assert _key(tuned["simnet"]) == _key(from_backbone["simnet"]), field
        assert _key(tuned["pretrain"]) != _key(from_backbone["pretrain"]), field
        assert _key(tuned["weighted"]) != _key(from_backbone["weighted"]), field
        assert _key(stage_inputs(params["full"], recipe.replace(**{field: value}), **where)["simnet"]) != \
            _key(base["simnet"]), field
    for key in SIMNET_KEYS:
        value = {"simnet_web": False, "beta": 0.0, "simnet_hidden": [8, 4, 4], "simnet_init": "backbone"}.get(key, 3)
        changed = stage_inputs({**params["full"], key: value}, recipe, **where)
        assert _key(changed["simnet"]) != _key(base["simnet"]) and _key(changed["weighted"]) != _key(base["weighted"])
        assert _key(changed["pretrain"]) == _key(base["pretrain"]), key
    for key in ("pretrain_epochs", "pretrain_batch_size"):    # SimNet starts from the pretrained CE model
        changed = stage_inputs({**params["full"], key: 7}, recipe, **where)
        assert all(_key(changed[s]) != _key(base[s]) for s in base), key
    assert _key(stage_inputs({**params["full"], "simnet_epochs": 7}, recipe, **where)["simnet"]) != _key(base["simnet"])
    stops = stage_inputs({**params["full"], "stop_th": 4}, recipe, **where)   # the classifier stages stop early
    assert [_key(stops[s]) != _key(base[s]) for s in ("pretrain", "simnet", "weighted")] == [True, True, True]
    # SimNet's epoch under selection: val is picked with the code's batch F1 on base validation images
    assert base["simnet"]["select_f1"] == "code_batches_base_val"
    # lr_step: no stage reads it (SimNet has its own schedule, the classifier loop steps per epoch)
    per_epoch = stage_inputs(params["full"], recipe.replace(lr_step="epoch"), **where)
    assert all(_key(per_epoch[s]) == _key(base[s]) for s in base)
    floor = stage_inputs({**params["full"], "save_floor": 60.0}, recipe, **where)   # a record, not training
    assert all(_key(floor[s]) == _key(base[s]) for s in base)
    on_test = stage_inputs({**params["full"], "selection": "test"}, recipe, **where)
    assert all(_key(on_test[s]) != _key(base[s]) for s in base)
    # the code's test batches pick SimNet's epoch: f1_max_images caps only the val pairs
    capped = {**params["full"], "selection": "test", "f1_max_images": 7}
    assert _key(stage_inputs(capped, recipe, **where)["simnet"]) == _key(on_test["simnet"])
    # the graph stage's own params leave the cached stages alone
    for key, value in (("alpha", 0.5), ("mu", -2.0), ("graph_batch_size", 64), ("graph_epochs", 7)):
        changed = stage_inputs({**params["full"], key: value}, recipe, **where)
        assert all(_key(changed[s]) == _key(base[s]) for s in base), key
    by_variant = {v: stage_inputs(params[v], recipe, **where) for v in ("weights", "weights_graph", "beta0", "full",
                                                                        "ce_noisy")}
    assert _key(by_variant["weights"]["weighted"]) == _key(by_variant["weights_graph"]["weighted"])   # shared
    assert _key(by_variant["beta0"]["simnet"]) != _key(by_variant["weights_graph"]["simnet"])   # joint BN forward
    assert len({_key(i["pretrain"]) for i in by_variant.values()}) == 1      # one CE model: ce_noisy, SimNet init


def _run_on_a_weak_shot_view(tmp_path, runner, method: str) -> tuple[Path, dict]:
    """Runs ``method`` (a suite's methods entry) on a synthetic weak-shot view (4 novel
    classes, 30 % noise); returns the output folder and the records by variant."""
    get_registry(refresh=True)
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path, scale=None, batch_size=16, methods=f"[{method}]", datasets="""
          [{name: weak_shot, options: {of: synthetic, novel_fraction: 0.5, noise_rate: 0.3,
            of_options: {coarse: 2, fine: 4, train_per_class: 12, test_per_class: 3, image_size: 40}}}]""")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out, records_by_variant(out)


def test_every_variant_end_to_end_with_the_codes_stages(tmp_path, runner):
    out, records = _run_on_a_weak_shot_view(
        tmp_path, runner, "{name: simtrans, variants: [ce_noisy, weights, weights_graph, full, beta0], params: "
                          "{simnet_hidden: [64, 32, 32], images_per_batch: 12, graph_batch_size: 48, "
                          "pretrain_batch_size: 16}}")
    assert all(r["status"] == "ok" for r in records.values()), [r["error"] for r in records.values()]
    assert set(records) == {"ce_noisy", "weights", "weights_graph", "full", "beta0"}
    assert "weight_auroc" not in records["ce_noisy"]["metrics"]
    for name in ("weights", "weights_graph", "full", "beta0"):
        m = records[name]["metrics"]
        assert 0 <= m["weight_auroc"] <= 100 and 0 <= m["simnet_pair_f1_base"] <= 100
        assert 0 <= m["simnet_pair_auroc_novel"] <= 100 and 0 <= m["simnet_pair_f1_code_novel"] <= 100
        assert 0 <= m["simnet_pair_f1_code_base"] <= 100 and m["simnet_steps"] > 0
        assert m["novel_classes"] == 4 and 0 <= m["top1"] <= 100
    for name in ("weights_graph", "full", "beta0"):
        assert 0 <= records[name]["metrics"]["weight_auroc_avg1"] <= 100
        graph_rows = [h for h in records[name]["history"] if h.get("phase") == "graph"]
        # epochs 1 → the alternating stage's 2: the graph term (batch 48) first, then CE alone (batch 16)
        assert [(h["epoch"], h["graph"], h["batch_size"]) for h in graph_rows] == [(1, True, 48), (2, False, 16)]
    # one CE model on the noisy data (ce_noisy's row and every SimNet's start), SimNets: base-only
    # (weights, weights_graph), joint forward with β = 0 (beta0) and β = 0.1 (full); the weighted-CE
    # stage shared by weights and weights_graph
    stages = Counter(p.name.split("-")[0] for p in (out / "stages").glob("simtrans_*.pt"))
    assert stages == {"simtrans_pretrain": 1, "simtrans_simnet": 3, "simtrans_weighted": 3}
    assert records["weights"]["metrics"]["top1"] == records["weights_graph"]["metrics"]["weighted_top1"]
    assert records["weights"]["metrics"]["weight_auroc"] == records["weights_graph"]["metrics"]["weight_auroc"]
    for name, joint in (("full", True), ("beta0", True), ("weights", False)):
        simnet_rows = [h for h in records[name]["history"] if h.get("phase") == "simnet"]
        assert simnet_rows and sum(h["steps"] for h in simnet_rows) > 0
        assert ("d_loss" in simnet_rows[0]) == joint                       # the discriminator trains at β = 0 too
        assert "select_f1" in simnet_rows[0]                               # selected on base validation pairs


def test_early_stop_is_the_codes_run_of_strictly_falling_scores():
    # utils/project_kits.early_stop: the last stop_th scores, each strictly below the one before
    assert falling_run([50, 49, 48], 3) and falling_run([60, 10, 50, 49, 48], 3)
    assert not falling_run([50, 49], 3)                     # fewer scores than stop_th
    assert not falling_run([50, 49, 49, 48], 3) and not falling_run([50, 49, 49], 3)   # a tie breaks the run
    assert not falling_run([50, 49, 48], 1) and not falling_run([50, 49, 48], 0)      # stop_th <= 1: never
    assert falling_run(list(range(20, 10, -1)), 10) and not falling_run([21] + list(range(20, 11, -1)) + [12], 10)


def test_a_classifier_stage_stops_on_falling_selection_scores_and_records_the_save_floor(tmp_path, runner,
                                                                                        monkeypatch):
    import fgvcbench_plugins.simtrans.classifier as classifier
    real, scripted = classifier.accuracy_metrics, [35.0, 34.0, 33.0]   # three falling validation scores

    def scores(logits, labels, num_classes):
        out = real(logits, labels, num_classes)
        return {**out, "top1": scripted.pop(0)} if scripted else out
    monkeypatch.setattr(classifier, "accuracy_metrics", scores)
    _, records = _run_on_a_weak_shot_view(
        tmp_path, runner, "{name: simtrans, variants: [ce_noisy], params: {pretrain_epochs: 6, stop_th: 3}}")
    record = records["ce_noisy"]
    rows = [h for h in record["history"] if h.get("phase") == "pretrain"]
    assert [h["val_top1"] for h in rows] == [35.0, 34.0, 33.0] and rows[-1].get("early_stop") is True
    assert record["metrics"]["epochs_run"] == 3 and record["metrics"]["best_epoch"] == 1
    # the code saves nothing below 40 %: the run says so rather than failing
    assert record["metrics"]["save_floor_misses"] == 1
    assert record["notes"]["save_floor"]["below"] == {"pretrain": 35.0}


def test_selection_on_test_keeps_the_first_simnet_epoch_with_the_best_code_f1(tmp_path, runner, monkeypatch):
    from fgvcbench.run import RunContext
    real, asked = RunContext.load_data, []

    def watch(self, *args, **kwargs):
        data = real(self, *args, **kwargs)
        asked.append((len(data.train), len(data.val)))
        return data
    monkeypatch.setattr(RunContext, "load_data", watch)
    _, records = _run_on_a_weak_shot_view(
        tmp_path, runner, "{name: simtrans, variants: [weights], params: {selection: test, simnet_epochs: 4, "
                          "simnet_hidden: [64, 32, 32], images_per_batch: 12, pretrain_batch_size: 16}}")
    record = records["weights"]
    f1 = [h["select_f1"] for h in record["history"] if h.get("phase") == "simnet"]
    assert len(f1) == 4 and record["metrics"]["simnet_best_epoch"] == f1.index(max(f1)) + 1
    # the code's protocol trains every stage on all its images: no validation split is carved
    assert asked and all(val == 0 for _, val in asked), asked
    assert "simnet_pair_f1_base" not in record["metrics"]   # no held-out base images to score
    assert 0 <= record["metrics"]["simnet_pair_f1_code_base"] <= 100   # the code's "Val" F1: base test images


def test_simnet_is_selected_on_base_validation_images_in_the_codes_batches(tmp_path, runner, monkeypatch):
    """selection: val scores each SimNet epoch with the code's F1 (10 classes a batch, ≈ 10 %
    same-class pairs) on base validation images, each image once per batch."""
    import fgvcbench_plugins.simtrans as simtrans
    real_batches, real_f1, made, scored = simtrans.code_f1_batches, simtrans.code_pair_f1, {}, []

    def batches(labels, generator, **kwargs):
        out = real_batches(labels, generator, **kwargs)
        if kwargs.get("repeat_short") is False:
            made["val"] = out
        return out

    def f1(head, feats, labels, batches_):
        scored.append(batches_ is made.get("val"))
        return real_f1(head, feats, labels, batches_)
    monkeypatch.setattr(simtrans, "code_f1_batches", batches)
    monkeypatch.setattr(simtrans, "code_pair_f1", f1)
    _, records = _run_on_a_weak_shot_view(
        tmp_path, runner, "{name: simtrans, variants: [weights], params: {simnet_epochs: 3, "
                          "simnet_hidden: [64, 32, 32], images_per_batch: 12, pretrain_batch_size: 16}}")
    assert records["weights"]["status"] == "ok", records["weights"].get("error")
    assert scored.count(True) == 3                          # one score per SimNet epoch, on those batches
    assert all(len(set(b.tolist())) == len(b) for b in made["val"])   # no image twice in a batch


def test_simtrans_on_a_plain_dataset_says_what_to_use(tmp_path, runner):
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path, scale=None, batch_size=16, methods="[simtrans]",
                       datasets="[{name: synthetic, options: {coarse: 1, fine: 2, train_per_class: 4, "
                                "test_per_class: 2, image_size: 32}}]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    record = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert result.exit_code == 1 and record["status"] == "failed" and "weak_shot" in record["error"]


def test_tables_name_views_by_their_base_level_and_noise_rate():
    from fgvcbench.spec import dataset_label
    assert dataset_label({"name": "cub", "options": {"crop": "bbox"}}) == "cub"
    assert dataset_label({"name": "coarse", "options": {"of": "cub", "of_options": {}}}) == "coarse(cub)"
    assert dataset_label({"name": "coarse", "options": {"of": "aircraft", "of_options": {"level": "family"}}}) == \
        "coarse(aircraft/family)"
    assert dataset_label({"name": "weak_shot", "options": {"of": "cub", "noise_rate": 0.2}}) == "weak_shot(cub, ρ=0.2)"
    assert dataset_label({"name": "weak_shot", "root_name": "CUB_200_2011_first50",
                          "options": {"of": "cub", "noise_rate": 0.2}}) == "weak_shot(cub@CUB_200_2011_first50, ρ=0.2)"


def test_a_view_on_another_copy_of_its_base_is_another_dataset(tmp_path):
    """A view reads its base from ``root``: the subset and the full dataset must not share
    run ids, cached stages or a leaderboard row."""
    from fgvcbench.suite import load_suite
    ids = {}
    for folder in ("CUB_200_2011", "CUB_200_2011_first50"):
        (tmp_path / folder).mkdir()
        (tmp_path / f"{folder}.yaml").write_text(
            f"data_root: {tmp_path}\ndevice: cpu\nbackbones: [test_resnet]\nmethods: [finetune]\n"
            f"datasets: [{{name: coarse, root: {folder}, options: {{of: cub}}}}]\n")
        suite = load_suite(tmp_path / f"{folder}.yaml", get_registry(refresh=True))
        ids[folder] = (suite.runs[0].run_id, suite.runs[0].dataset)
    assert ids["CUB_200_2011"][0] != ids["CUB_200_2011_first50"][0]
    assert "root_name" not in ids["CUB_200_2011"][1]                      # the usual folder: ids as before
    assert ids["CUB_200_2011_first50"][1]["root_name"] == "CUB_200_2011_first50"


def test_weight_auroc_reads_high_weights_as_clean():
    """The AUROC of the sample weights: 100 when every clean image outweighs every noisy one,
    0 when the order is reversed, 50 for a tie; the means split by the flags; nothing when
    a flag is unknown or only one kind of image exists."""
    from fgvcbench_plugins.simtrans import _weight_metrics
    w = torch.tensor([2.0, 1.5, 0.1, 0.2])
    m = _weight_metrics(w, [True, True, False, False])
    assert m["weight_auroc"] == pytest.approx(100.0)
    assert m["weight_clean_mean"] == pytest.approx(1.75) and m["weight_noisy_mean"] == pytest.approx(0.15)
    assert _weight_metrics(w, [False, False, True, True])["weight_auroc"] == pytest.approx(0.0)
    # one noisy image above one clean one: 3 of the 4 clean-noisy pairs ordered right
    assert _weight_metrics(torch.tensor([2.0, 0.15, 0.1, 0.2]), [True, True, False, False],
                           "_avg1")["weight_auroc_avg1"] == pytest.approx(75.0)
    assert _weight_metrics(torch.ones(4), [True, False, True, False])["weight_auroc"] == pytest.approx(50.0)
    assert _weight_metrics(w, [True, None, False, False]) == {}
    assert "weight_auroc" not in _weight_metrics(w, [True] * 4)
    # SimNet's pair AUROC: the same-class pair (0, 1) scored above every other pair
    s = torch.tensor([[1., .9, .1], [.9, 1., .2], [.1, .2, 1.]])
    assert pair_auroc(s, torch.tensor([0, 0, 1])) == pytest.approx(100.0)
    assert pair_auroc(1 - s, torch.tensor([0, 0, 1])) == pytest.approx(0.0)


def test_the_test_view_is_the_codes_resize_255_at_any_size(tmp_path):
    """The code: Resize(255) → CenterCrop(224). Every scale keeps its share (224/255), and a
    suite's eval_crop_pct gives the usual 256."""
    from fgvcbench.suite import load_suite
    (tmp_path / "s.yaml").write_text(
        "device: cpu\nscale: paper\nbackbones: [test_resnet]\nmethods: [simtrans]\n"
        "datasets: [{name: weak_shot, options: {of: synthetic}}]\n")
    views = {}
    for scale in ("smoke", "short", "paper"):
        suite = load_suite(tmp_path / "s.yaml", get_registry(refresh=True), scale=scale)
        views[scale] = Recipe(**suite.runs[0].recipe)
    assert views["paper"].image_size == 224 and views["paper"].eval_resize == 255
    assert views["short"].eval_resize == 255
    assert views["smoke"].eval_resize == round(views["smoke"].image_size * 255 / 224)
    (tmp_path / "t.yaml").write_text((tmp_path / "s.yaml").read_text() + "train: {eval_crop_pct: null}\n")
    usual = load_suite(tmp_path / "t.yaml", get_registry(refresh=True), scale="paper").runs[0].recipe
    assert Recipe(**usual).eval_resize is None and "eval_crop_pct" not in usual   # 256, and the ids of before
