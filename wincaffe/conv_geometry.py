"""Shape rules and checks shared by the convolution layers (Convolution, WinogradConv,
FFTConv): one wording for each error, naming the layer and the field."""


def conv_output_size(size, kernel, pad, stride=1, dilation=1):
    """Caffe's rule: (size + 2·pad − dilation·(kernel − 1) − 1) // stride + 1."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def require_4d(layer, shape):
    """A ConfigError unless ``shape`` is (N, C, H, W)."""
    if len(shape) != 4:
        raise layer.error(f"needs a 4-D bottom (N, C, H, W), got shape {shape}", field="bottom")


def require_unit_stride(layer, conv_param):
    """For the fast algorithms: stride, dilation and group must be 1."""
    for field in ("stride", "dilation", "group"):
        value = conv_param[field]
        if value != 1:
            raise layer.error(f"{layer.type_name} supports only {field} 1, got {value} "
                              f"(use a Convolution layer for this one)", field=f"convolution_param.{field}")


def conv_output_shape(layer, bottom_shape, num_output, weight_channels, kernel, pad, stride=1, dilation=1):
    """(N, K, oh, ow) of a convolution of ``bottom_shape`` (N, C, H, W), after checking
    that C matches the weights and that the kernel fits the padded input."""
    N, C, H, W = bottom_shape
    if C != weight_channels:
        raise layer.error(f"bottom has {C} channels but the weights expect {weight_channels}", field="bottom")
    oh = conv_output_size(H, kernel, pad, stride, dilation)
    ow = conv_output_size(W, kernel, pad, stride, dilation)
    if oh < 1 or ow < 1:
        raise layer.error(f"kernel {kernel} with pad {pad} does not fit a {H}x{W} input",
                          field="convolution_param.kernel_size")
    return N, num_output, oh, ow
