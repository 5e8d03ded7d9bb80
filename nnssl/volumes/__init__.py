"""The floor every room reads images through: discovery of image files, readers (TIFF stacks, plane folders,
Zarr, OME-Zarr; nnU-Net's formats through a reader the caller passes), lazy volumes and region reads,
resampling and tissue sampling. Imports no nnU-Net and no other room of nnssl, only the bottom files."""
