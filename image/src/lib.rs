//! OCI images for skiff.
