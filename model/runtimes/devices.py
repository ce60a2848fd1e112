"""Says which device TensorFlow scores on in this process: the first GPU it sees, or the CPU."""


def gpus() -> list:
    """The GPUs TensorFlow sees here, by name ('NVIDIA H200'), in its order."""
    import tensorflow as tf

    names = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            names.append(tf.config.experimental.get_device_details(device).get("device_name") or device.name)
        except (ValueError, RuntimeError):
            names.append(device.name)
    return names


def scoring_device() -> str:
    """'GPU:0 NVIDIA H200' where TensorFlow sees a GPU (it places the model's operations there), else 'CPU'."""
    found = gpus()
    return f"GPU:0 {found[0]}" if found else "CPU"
