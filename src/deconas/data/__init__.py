"""Images in and out: MATLAB-compatible bicubic resizing (what every SR benchmark's LR images
are made with), robust image files (16-bit, greyscale, alpha, EXIF rotation), dataset folder
layouts with their LR/HR pairs and held-out splits, and the training patch sampler."""
