"""Data: IDX reader, embedded MNIST / Fashion-MNIST, splits, and the registry of evaluation sets."""
