"""The toy world of the CPU default: the toydrive generator and the toy models (tiny architectures, the toy
CLIP and the toy base policy). Production code imports it only where the toy preset is chosen."""
