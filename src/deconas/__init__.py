"""DeCoNAS: neural architecture search for single-image super-resolution.

The method flows one way through the subpackages: ``space`` (the genotype, the operations, the
network a genotype builds, its cost) -> ``search`` (shared weights, the controller, the loop,
derive, the study) -> ``train`` (one network from scratch) -> ``evaluate`` (the SR protocol) ->
``infer`` (tiled upscaling, backends, export); ``data`` feeds all of them images, and ``cli`` is
the thin command line on top. ``config`` holds every setting once, ``runfolder`` every file name.
"""

__version__ = "0.1.0"
