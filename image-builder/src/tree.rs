//! The source of an image: a directory or an archive, as a sorted tree.
