"""Bounds on what settings may ask for: settings come from files too (a model, a session store), and a file must not
be able to make the product take all the machine's memory or time. The defaults sit far inside them."""

#: Most feature maps a level of the net may have (nnU-Net caps its 3D nets at 320): every level at this cap, depth 6,
#: is 195 million weights, 0.7 GiB; with their moving average and the optimiser's moments about four times that.
MAX_FEATURE_MAPS = 512
#: Most patches a training batch may hold (the default is 1; CPU and GPU training shrink it further to the memory
#: free, ``core/memory.py``).
MAX_BATCH = 64
#: Most voxels a training patch may have (256^3; the default is 64^3).
MAX_PATCH_VOXELS = 1 << 24
#: Most windows one forward pass of a prediction may take (the defaults take 2 on a CPU, 8 on a GPU).
MAX_WINDOWS = 16
#: Most trees a first-responder forest may have (each stage's fit and answer grow with them: 32 take 0.3-4 s).
MAX_TREES = 1024
#: Largest class and channel counts a checkpoint may declare (uint8 masks, and a sane input width).
MAX_CLASSES = 254
MAX_CHANNELS = 64
