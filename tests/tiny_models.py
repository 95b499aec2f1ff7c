"""The tiny models of the tests' real runs, as config dicts. No imports: tools/warm_jittor.py
compiles their Jittor kernels during setup (in the background, before torch is installed), so
that no test pays a cold single-threaded compile for them (Jittor keys some kernels by shape
traits such as a channel count of 1, so the parity check's models do not cover these)."""

# A UNet small enough for tests on 2 shared cores, big enough to exercise attention and both
# resolution levels.
TINY_MODEL = {"image_size": 8, "in_channels": 1, "base_channels": 8, "ch_mult": [1, 2],
              "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0, "norm_groups": 4}
# The quick config's model: compute clearly dominates Jittor's graph building (sync test).
SMALL_MODEL = {"image_size": 16, "in_channels": 3, "base_channels": 32, "ch_mult": [1, 2, 2],
               "num_res_blocks": 1, "attn_resolutions": [8], "dropout": 0.0, "norm_groups": 8}
# A class-conditional DiT with label dropout (guidance), one block.
TINY_DIT = {"family": "dit", "image_size": 8, "in_channels": 1, "patch_size": 2,
            "hidden_size": 32, "depth": 1, "num_heads": 2, "num_classes": 4,
            "class_dropout": 0.25}
