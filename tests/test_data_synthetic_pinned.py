"""SyntheticHands samples pinned bit for bit: SHA-256 digests of every array of a few samples.

Rules out any change of the samples for the same (seed, split, index) and options: a random number
drawn in another order or for another purpose, a stage of the pipeline moved, a float computed in
another precision or order. The other tests check properties (determinism within one version of
the code, geometry, visibility); this one is what lets the generator's code be reorganised safely.
The configurations cover every constructor option that changes a sample (split, seed, image size,
occlusion, truncation, fill, framed / uniform views, left and mixed hands in one batch, PCA poses,
the self-occlusion margin).

The digests were recorded with the code of ``handops_models/data/synthetic.py`` before it became a
package, with the library versions below; other versions of numpy, torch or Pillow may round
differently (and the shard cache key already changes with numpy / torch), so the test is skipped there.
"""

import hashlib

import numpy as np
import PIL
import pytest
import torch

from handops_models.data.synthetic import SyntheticHands

RECORDED_WITH = {"numpy": "2.4.6", "torch": "2.13.0+cpu", "Pillow": "13.0.0"}

# name: (SyntheticHands arguments, indices generated as one batch)
CONFIGS = {
    "default": (dict(num_samples=8, image_size=32), [0, 5]),
    "test_split_occluded_uniform": (dict(num_samples=8, image_size=48, seed=3, split="test", occlusion=1.0,
                                         uniform_view=1.0, truncation=1.0), [1, 6]),
    "val_pca_left_framed": (dict(num_samples=8, image_size=40, seed=2, split="val", pose_mode="pca", left_prob=1.0,
                                 uniform_view=0.0, fill=(0.3, 0.5), self_occlusion_scale=0.5,
                                 self_occlusion_tolerance=0.01), [2, 7]),
    "mixed_hands_one_batch": (dict(num_samples=8, image_size=32, seed=4, occlusion=0.6, left_prob=0.5,
                                   num_subjects=12), [0, 1, 2, 3, 4, 5]),
}

# {config: {index: {key: sha256 hex of the value}}}
PINNED = {
    "default": {
        0: {
            "image": "7460c5d1e153ccd64f03105f29066f845a636489c1c43a40e984ac973ab7c1ae",
            "keypoints2d": "6ce1b4c51f950b50f76f37ba084d5a754bb3dc1af604d96b52f5763b7a98f121",
            "visibility": "2a3020ba726b6f93c555c32f86f5ea164a40a493e0aa21fb352dd6a4f0333cad",
            "keypoints3d": "839245a79e9ddf3161fb1d4260985be933800d83353edc0d4f0ad18ae002cf11",
            "vertices": "3ef94005b4890011f8b8a60a8ec8d6ea7c444130fed7b4794e8f00c464dcc135",
            "pose": "52d1f94c785f1ffb499ccd9ee3025c7dac50a5d817e5228855b86b5ceff2d2a3",
            "betas": "2bb674b64988e2edc937fd8be18608eb86fce41b6c3bc27c91a2cb115106176a",
            "K": "9a769356456bf1acf617805f3261ca060ecb26c73e736bb390b784793c538696",
            "subject": "eb1e33e8a81b697b75855af6bfcdbcbf7cbbde9f94962ceaec1ed8af21f5a50f",
            "bbox": "0870878d2d6d5f0194b98119ebb33cf13a793300b4213fab2aa68da39109f58f",
            "is_left": "60a33e6cf5151f2d52eddae9685cfa270426aa89d8dbc7dfb854606f1d1a40fe",
        },
        5: {
            "image": "463ba8746343072e9fd37114a5ec2bf38246649dda9d404d8cdd37cf01cb61c8",
            "keypoints2d": "79278b43b21231a00168ab3b84b4ec46b2eb6e13b1b64d8c5450683768d6f73b",
            "visibility": "0e0c4dc8c636ca041bf95348a5036c61bcb9c92f9e30217388d6652f241a7b89",
            "keypoints3d": "eefc4280851f0994253c8156e1030aa859bad06357c0b1d0e0c67939aba623fd",
            "vertices": "ea46a18b341480b4485f2e679377f0c87b722da33c4b0a47ed25088989487e9c",
            "pose": "54f072ac94b11e0e4dc5253361ec25cc49c04e5a1c093a4ca78ba3f5559fbbbd",
            "betas": "51c0e162b7691f803ab4f32efaff85e14257ec933de70b3fa308a3b89a7c5962",
            "K": "e493e1a40594b73ac17df10ad2e008abb1d7b8f8fed5062656769a695716c808",
            "subject": "31489056e0916d59fe3add79e63f095af3ffb81604691f21cad442a85c7be617",
            "bbox": "6017c24b875df120cef3e552c26683ff04f7d8187dab3a9fc081338902d3b63f",
            "is_left": "60a33e6cf5151f2d52eddae9685cfa270426aa89d8dbc7dfb854606f1d1a40fe",
        },
    },
    "test_split_occluded_uniform": {
        1: {
            "image": "4aace01dc58dff21eb0592e14eb76bbaa01df224b1c878060326c84b96934041",
            "keypoints2d": "78845933fe1247a52ed1003c06da7160f8ea0efeac5a553ee67e604eddb013f6",
            "visibility": "b288a3b01a7fffe2933b0fdf375e303f6c568845438a09b58f7b34546d85645e",
            "keypoints3d": "95118021882d2e10ee2edb0a693c6434ecbe57f2007d19c952f393366a8f3855",
            "vertices": "0b5fbd042be8fdd7ff0d68928eefb622829be30a74ba820c868479fdabbe7fa0",
            "pose": "2c0f8b3c3f27b341d5b7a9f00c931bd7189abde412ba1dc2f95eee12cb07b4f8",
            "betas": "2449cb7fb101fa316676a675db034bec1630e83ad3c73312be31be19dcec1b26",
            "K": "11cd35c2906b926e1c8ba09051848b8994b7bc63babe851802732151dc27da92",
            "subject": "98010bd9270f9b100b6214a21754fd33bdc8d41b2bc9f9dd16ff54d3c34ffd71",
            "bbox": "90698718ea7b10687a11f7a6e458762beaf0209f7ad26990bc860f4f6f4dc007",
            "is_left": "60a33e6cf5151f2d52eddae9685cfa270426aa89d8dbc7dfb854606f1d1a40fe",
        },
        6: {
            "image": "7973f32ee83cba4e17b4ad6844e39ad9037aab74edd24abca3491e22bf6f5161",
            "keypoints2d": "be7b1db82d29f6f181f5b305dc52140e2e5104349cd9f090afcf30502af73917",
            "visibility": "0a8de8e22d99eda0c73cc622669017b6ca610b378f013ba0fe86469fbcedf7f5",
            "keypoints3d": "43a221f7c6327d60e8fd5a05f3225912aafe5fa0a78e6e4d14cedc358c7edc8e",
            "vertices": "f359c954cdf576639870f9943c0367bbd3cf33fe2fb37e800e075ac4969125b7",
            "pose": "f679d8351e42dfdc3bbc104800379e87631ed1393d8b8d42de23207b81067f51",
            "betas": "700258b20a32b5115e20f11e285500c72150014b4dbc6eb1615e9f73e05d6e19",
            "K": "5e3b2d93064823db904d3d0767e59794684b53da89b10b871a91f766fdfc6f5d",
            "subject": "3d914f9348c9cc0ff8a79716700b9fcd4d2f3e711608004eb8f138bcba7f14d9",
            "bbox": "c7d9ce4f6ab96245939b8d078f5ae5c4a866cb49fdb3402b0e18a366878283e2",
            "is_left": "60a33e6cf5151f2d52eddae9685cfa270426aa89d8dbc7dfb854606f1d1a40fe",
        },
    },
    "val_pca_left_framed": {
        2: {
            "image": "4024d45d4a7bb55087187aa0a53221f0b95fd6ee60f20c029f841c9501f76b51",
            "keypoints2d": "2b0ca48d7f4935b8757da691c08f9ed8a894b0390dddac3d61ca123b9a3332eb",
            "visibility": "80f8e3ee46b6ed0f03f9629d8a33236c356d389d9b65b6d56f5a57a6f813f31f",
            "keypoints3d": "c32fba0769a6f98ff88a97adbdaf1e198af795199c1350a3782943f749fd1343",
            "vertices": "a816d153737cd40858c53876476b1cb74af2f95747a6a9d8323513579a70971c",
            "pose": "6364191dcb70192dc9f24088c92a464592cd1b2e9c4f61674bcd736924578e17",
            "betas": "94feac70123ad1ac68591faf3d0cbe9f77d6ad82ca500f5327d586bc2a0042ad",
            "K": "2e8c237880ca1d2f1d31087dd1b4697f77bc15aa3f76fb438b4af176decd8f55",
            "subject": "eb1e33e8a81b697b75855af6bfcdbcbf7cbbde9f94962ceaec1ed8af21f5a50f",
            "bbox": "3920c9d5b6755b624c6e1bd9d0e8dcc962a7df10d9a2c00294b1baa3ba900d77",
            "is_left": "3cbc87c7681f34db4617feaa2c8801931bc5e42d8d0f560e756dd4cd92885f18",
        },
        7: {
            "image": "a2c66bdb8caaa1ec763d45559b82c2a7685ab4dcf2335047908082b895f7706b",
            "keypoints2d": "07073ed137b58fd767baee3a36a3e0e03d5f3fe9dd07df012530e1ea347d2b15",
            "visibility": "7e09675303f74992e0d0f3ff2676d2f4780e53bddf4fd5351cedd31b04085f93",
            "keypoints3d": "3e8fbc8b7d2828036d502e5fbc1b33615c6789c5099f73d37c852f07fd1ea2a4",
            "vertices": "280808bd9b4cbdd67d6905def3d307438288bab14a3065767bfbf469767b2fe6",
            "pose": "14a7c9d02aaf4cdbf7d18c65183d04ee05cce7f161ff500eb65f988b546ecfb8",
            "betas": "d1c631b0d4207564f3cc4659a18436684d93fd6c4c4d2f469f7b6a2d39280f23",
            "K": "af8a0642ad2d0562f3b349bcb8774b2e19aa16748ad4ea6109c93525ead7faa3",
            "subject": "aea92132c4cbeb263e6ac2bf6c183b5d81737f179f21efdc5863739672f0f470",
            "bbox": "810fc2acee9d8e4771d02fa4017b1e963180ff84aec8e2d8f4f99cec4f0967c6",
            "is_left": "3cbc87c7681f34db4617feaa2c8801931bc5e42d8d0f560e756dd4cd92885f18",
        },
    },
    "mixed_hands_one_batch": {
        0: {
            "image": "1a8f2ba81ccc054613afc2cb5342d788ebb88ca5db47e865d764817265b50b60",
            "keypoints2d": "86581015a4810235076ec6fb524de9171cc997bf8bfa2f9098dafcdf62a6357a",
            "visibility": "372e4d7af5f8bb4e2fe1d0114787e11e6bd6c78d33db94ae42cb31a545010fb7",
            "keypoints3d": "ac7e6355fbc536c59d4f2afefa0e6a78b33dff59c4ccf1d9d09b01cacd8e3692",
            "vertices": "bc0aa31f277b3ab65cf06159baf4897df0e03e2ab9da517c5d8949f95c60a9fa",
            "pose": "aa627bc5d1471aede7064f3366f6cb21812944ef6db373b2ed6de0d5492c7d1d",
            "betas": "ae9db6a02fa8b2db5aa9c6d792a203b78771b6a730c9870767e7e016ef0b9dc1",
            "K": "64d01d6120021040a69e4670c14e7267c06454623c33827aefe1c586714bc241",
            "subject": "4a44dc15364204a80fe80e9039455cc1608281820fe2b24f1e5233ade6af1dd5",
            "bbox": "1a5440dd3fbedd04730e8af0bf5cf0f4f77b81d087cf19e0bd63101b002f2d66",
            "is_left": "60a33e6cf5151f2d52eddae9685cfa270426aa89d8dbc7dfb854606f1d1a40fe",
        },
        1: {
            "image": "283b9d04ea3049c8b86b8fe38c198561aa7aed7736971006a2c9b26cde2b2ba5",
            "keypoints2d": "38d37b6444f3fa5743d3505d925539d8e53e7a2bc7177754862f8e46c713918c",
            "visibility": "1a318a5609f8ba4eb9ea4a153bf8b1a5d39f74f22314b9e0843c6275730a897c",
            "keypoints3d": "a20a591427ac50b5ea581d735afe897306f3ff46c859b2c5157814898a39baf2",
            "vertices": "cdc59d0999c6191fdde26fed19b43749aab1d109b8c995dc6182c17f750f3215",
            "pose": "dc3f7593f48eb4446df2a550756812e167f9932bdbe013cdaac9b61141bd84c9",
            "betas": "7f8f7e4ec471a8a1f2dd3be0d50843fe8b6cbec67108245d668885e496b6f398",
            "K": "ba2cc10791d2fdb5f7fe88116228f764d05da621832e773a9590c8f689570ef5",
            "subject": "d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35",
            "bbox": "935df65e2138cc631fadd6447c24e5c009b0a031a6b2e9a66b7571726d91e517",
            "is_left": "3cbc87c7681f34db4617feaa2c8801931bc5e42d8d0f560e756dd4cd92885f18",
        },
        2: {
            "image": "dab48b0bc04965ad35899f01590f75428b13ba388e72ddc7b7ba469482b26bd5",
            "keypoints2d": "35bc47ea614ef9f1122d8fb558edc88f111a1f9b4b56c54d6bda5e31f6ff8181",
            "visibility": "3b330519969c05448518ced7a998f8c317327ce1b83ab41b517f75b6240fe7e8",
            "keypoints3d": "21ab7623d7dfb6abba1fa25ef6fbbea4007b3da625c1a18213fc91cc013ab4cf",
            "vertices": "346fb89f65804976ef0f5a83d19da2842ee20f3ec726355820a9c728ed5be3b7",
            "pose": "56552e4ccd69fcf42dfd543916532e04c7b68bb68eca49f954a5e51fd333f996",
            "betas": "5b8f5364977eff2e5ab011e0c5c7ecb6728d6b7b0d95e52929d0bef42521b41a",
            "K": "39d32d119021911edaa0910cbd9110e2c11d2bf13000e584b9490229cc725904",
            "subject": "4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce",
            "bbox": "7fc73b6b6a1300194f818f1aa972e2e12771fc27c1903fdf6249b64631d18e9f",
            "is_left": "3cbc87c7681f34db4617feaa2c8801931bc5e42d8d0f560e756dd4cd92885f18",
        },
        3: {
            "image": "19836b40b0ed622f57c7c77e37ee67543cb811f36df1fdc68b51a2d9a39b334c",
            "keypoints2d": "37e7e5f14bb5966b52d4033ae309daaa6d4146b4e37626711334890ac00cebbe",
            "visibility": "e37e27bdf2db9fe7b9388be683ff81f812f0a4a293f8f3269616a36709edae54",
            "keypoints3d": "5ff0ab0e3ee658417918aeb73cb3ca276ba6ec5a36491225dcb20f4295896999",
            "vertices": "f8f55567d435db1293dd3980cf15e11b2e3e515b2b92ef9148ed9ea8753b584b",
            "pose": "26f03e4173349f56c0c288108eb2328e1acc71869d4234a0a886fc09edc2d7d1",
            "betas": "c4b9c04cc5d0afd9610d36c79728a1b6380c48be5c2b03be2bcddb73f6a87280",
            "K": "f94653674d8f4a3ecaea387e9e70dbad4f6ec99a165e091e2648dcfffd20833b",
            "subject": "7902699be42c8a8e46fbbb4501726517e86b22c56a189f7625a6da49081b2451",
            "bbox": "79e59ecdaa6e4eed3d3755929f3205c79ae7c4fbfd502b3666fd66e934ab3857",
            "is_left": "60a33e6cf5151f2d52eddae9685cfa270426aa89d8dbc7dfb854606f1d1a40fe",
        },
        4: {
            "image": "66dca86c5194392f3f259bd1b52d29595fedcc5b313fe5b9c045ddd13076f289",
            "keypoints2d": "da891baf6b911fbac5a2f1742de2e960e4e9968831125d429ee5ee4b34822f1e",
            "visibility": "58ae5bec5a73f8c2951f67fc2f8b024c7bd8d38048db06bb56a652e5e7a90175",
            "keypoints3d": "2359a475e09bdbf8d72fe9cbfac1bae4b78bbb40022f9a5551113acb0dcddc83",
            "vertices": "e40337539bf60a096727e5a796aad2f3e394ff6c08e238de491a8d11a7e6a047",
            "pose": "1b4faf1fabe80e364b640b2a2c8807df97ec893eea707b7905e7a90105bf85fd",
            "betas": "ae9db6a02fa8b2db5aa9c6d792a203b78771b6a730c9870767e7e016ef0b9dc1",
            "K": "29d00e1f0c0e633986ccbf4dd918dcf06abf827903e129b3c1043805aaa18301",
            "subject": "4a44dc15364204a80fe80e9039455cc1608281820fe2b24f1e5233ade6af1dd5",
            "bbox": "711bed924c066e20e461ef1df0a2c4b839ba83ad6b9d49b821e12bda250733a0",
            "is_left": "60a33e6cf5151f2d52eddae9685cfa270426aa89d8dbc7dfb854606f1d1a40fe",
        },
        5: {
            "image": "75b2741c9b423e8b37e12610238d5b2c4ac7f74b12860af753c2f7c8005fa4d8",
            "keypoints2d": "75c9f6b4e6558ade9096bb44375f72471da50ade23d9f542d78ef2b7b3bf6b78",
            "visibility": "ebe93c3fe91e302aaaa4195ca59c4b00e40a50d0778eeaa5d9acceee70a8a73d",
            "keypoints3d": "7ddbc3b97c14effaed3bf8d91098c161c04b680274ea061c2ef1c2ace4cf6f76",
            "vertices": "a4f8a065ca2f64ef2b6dac4910db50d689bcb6b3a1a20b0e7e762d608f915408",
            "pose": "bb2e1b4dc0e81cab0c3e9388b25115e9aca0c069e53808b7a77dce32e9e29097",
            "betas": "0ad96407ff19ba692292b8adfb8bb3f2595ecab582c9249a91fcdb21f03abc16",
            "K": "b4e49f9018ee09a28794c6f2deb7d1d77d4ddc4010cd7586b2a5a6c7aca2277e",
            "subject": "e7f6c011776e8db7cd330b54174fd76f7d0216b612387a5ffcfb81e6f0919683",
            "bbox": "84a82bbec5f41bcad4d40f4d87686fa22b3889562c245fb3bb52d37b5653c109",
            "is_left": "60a33e6cf5151f2d52eddae9685cfa270426aa89d8dbc7dfb854606f1d1a40fe",
        },
    },
}


def value_digest(value) -> str:
    """SHA-256 of a sample value: dtype, shape and bytes of a tensor; the repr of an int / bool."""
    h = hashlib.sha256()
    if isinstance(value, torch.Tensor):
        array = value.numpy()
        h.update(f"{array.dtype} {array.shape}".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    else:
        h.update(repr(value).encode())
    return h.hexdigest()


def config_samples(name: str) -> dict[int, dict]:
    """The samples of configuration ``name`` by index (generated as one batch)."""
    kwargs, indices = CONFIGS[name]
    return dict(zip(indices, SyntheticHands(progress=False, **kwargs).__getitems__(indices)))


def digests(samples: dict[int, dict]) -> dict[int, dict[str, str]]:
    """{index: {key: value_digest}} of samples {index: sample dict}."""
    return {i: {key: value_digest(value) for key, value in sample.items()} for i, sample in samples.items()}


def _versions() -> dict[str, str]:
    return {"numpy": np.__version__, "torch": torch.__version__, "Pillow": PIL.__version__}


@pytest.mark.skipif(_versions() != RECORDED_WITH, reason=f"digests recorded with {RECORDED_WITH}")
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_samples_are_bit_identical_to_the_pinned_ones(name):
    samples = config_samples(name)
    if name == "mixed_hands_one_batch":  # the batch renders both models and merges their pixels
        assert {s["is_left"] for s in samples.values()} == {False, True}
    got, expected = digests(samples), PINNED[name]
    assert {i: set(keys) for i, keys in got.items()} == {i: set(keys) for i, keys in expected.items()}
    changed = [(i, key) for i in expected for key in expected[i] if got[i][key] != expected[i][key]]
    assert not changed, f"samples changed at (index, key): {changed}"
