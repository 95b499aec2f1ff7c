"""Sample quality: FID/KID/IS through torch-fidelity (`fid`, always in a process without
Jittor), image grids, strips and denoising GIFs (`images`), and generating images from a
backend (`generate`).

May import records, stats, data and measure.
"""
