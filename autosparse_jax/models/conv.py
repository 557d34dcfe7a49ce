"""How the conv nets convolve: XLA's convolution, or im2col + one matmul.

XLA:CPU's convolution kernels are slow on small spatial maps (a 2x2 512->512 conv
at batch 128: 717 ms forward via lax.conv, 13 ms as im2col + matmul), while on
large maps its conv beats an im2col matmul, whose patch matrix is k*k times the
input. `im2col_conv_general_dilated` is a drop-in for `lax.conv_general_dilated`
(flax `nn.Conv(conv_general_dilated=...)`) for what the models use: NHWC x HWIO,
any strides, explicit or string padding, no dilation, one feature group. It pads,
takes the k*k shifted strided views, concatenates them on the channel axis
(patches in (kh, kw, cin) order, the order of an HWIO kernel reshaped to
(kh*kw*cin, cout)) and makes one `lax.dot_general` of them with the kernel. Its
gradients are those of slices, a concatenation and a matmul: no conv anywhere,
and under jax.vmap (a vmapped grid of nets) the matmul becomes a batched matmul
where lax.conv becomes a grouped convolution (also slow on XLA:CPU); that alone
does not make a grid fast: a vmapped grid of 4 ResNet-18 at 1/4 width stepped 1.1x
slower than the 4 nets one at a time with im2col everywhere, but im2col's stride-1
convs are slow, so the grid was still ~2x slower than one at a time with "xla".

`conv_general_dilated_for(impl)` is the policy the models use (`get_model(...,
conv=impl)`):

  "xla"     always lax.conv_general_dilated (the default; bit for bit the nets
            as before: nn.Conv's own default).
  "im2col"  always im2col (raises NotImplementedError for what it does not support).
  "auto"    decided per conv when it is traced: im2col when jax.default_backend()
            is "cpu", the conv is one im2col supports, and either its output map is
            at most AUTO_MAX_OUTPUT_SIZE (2) pixels high and wide, or its kernel is
            1x1 with a stride > 1 (a strided slice and a matmul: no patch copy);
            lax.conv otherwise (GPUs and TPUs always keep lax.conv). The choice only
            depends on static shapes and the backend, so a model traces the same
            way every time on one machine; a program jitted for the CPU on a machine
            whose default backend is a GPU keeps lax.conv.

Measured on a shared 2-vCPU AVX-512 Xeon (benchmarks/conv_layers_cpu.py: forward
+ gradients w.r.t. input and kernel, batch 128, every ResNet-18 / VGG-16 CIFAR conv
at width 1 and 1/4, plain and under a size-1 vmap as the jobs run), time of
lax.conv / time of im2col:
  3x3 convs with 2x2 outputs (VGG's last stage; 4x4 -> 2x2 at stride 2)  8-69x
  3x3 with a 1x1 output                                               1.5-2.1x
  3x3 with a 3x3 output (in no model)                               0.71-1.28x
  3x3 stride 1, outputs 4x4 to 32x32                               0.28-0.98x
  3x3 stride 2, outputs 4x4 to 16x16                                0.60-1.27x
  1x1 stride 2 (ResNet shortcuts)                        1.2-3.8x (one 0.91x)
A full-width train step with "auto" vs "xla" (benchmarks/conv_cpu.py): VGG-16 6.4x
faster, ResNet-18 1.1x (its maps never get below 4x4 at 32x32 inputs; only the
shortcuts change). im2col adds ~0.1-0.3 s of XLA compile time per conv.

Under "auto" and "im2col" on CPU, the models' BatchNorm also takes its batch statistics
as matrix-vector products (models/layers.py:MatmulStatsBatchNorm; "xla" keeps flax's
BatchNorm): ResNet-18 3.40 -> 3.10 s, VGG-16 1.79 -> 1.62 s per step.

The param tree does not depend on the choice (only the `conv_general_dilated`
function of each nn.Conv changes), so checkpoints load under any of them.
"""
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from autosparse_jax.errors import ConfigError, unknown_name_message

CONV_IMPLS = ("xla", "im2col", "auto")

# "auto" takes im2col (CPU only) for convs whose output map is at most this high and wide.
AUTO_MAX_OUTPUT_SIZE = 2

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def _unsupported(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                 batch_group_count, out_sharding):
  """Why im2col cannot run this conv (a message), or None when it can."""
  if lhs.ndim != 4 or rhs.ndim != 4:
    return f"2-D convolutions only (4-D operands), got lhs {lhs.shape} and rhs {rhs.shape}"
  if dimension_numbers is None:
    return "dimension_numbers=None means NCHW x OIHW; only NHWC x HWIO -> NHWC is supported"
  try:
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  except (TypeError, ValueError) as e:
    return f"bad dimension_numbers {dimension_numbers!r}: {e}"
  if dn != _NHWC:
    return f"only NHWC x HWIO -> NHWC is supported, got {dimension_numbers!r}"
  for name, dilation in (("lhs_dilation", lhs_dilation), ("rhs_dilation", rhs_dilation)):
    if dilation is not None and any(d != 1 for d in dilation):
      return f"no dilation is supported, got {name}={tuple(dilation)}"
  if feature_group_count != 1 or batch_group_count != 1:
    return (f"feature_group_count=1 and batch_group_count=1 only, got {feature_group_count} and "
            f"{batch_group_count}")
  if out_sharding is not None:
    return "out_sharding is not supported"
  return None


def _pads(lhs, rhs, window_strides, padding):
  if isinstance(padding, str):
    return [tuple(p) for p in lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)]
  pads = [tuple(p) for p in padding]
  if len(pads) != 2 or any(len(p) != 2 for p in pads):
    raise ValueError(f"padding must be a string or two (low, high) pairs, got {padding!r}")
  return pads


def _output_shape(lhs, rhs, window_strides, padding):
  pads = _pads(lhs, rhs, window_strides, padding)
  return tuple(max(0, (n + lo + hi - k) // s + 1)
               for n, (lo, hi), k, s in zip(lhs.shape[1:3], pads, rhs.shape[:2], window_strides))


def _patches(x, kh, kw, oh, ow, strides):
  """[N, oh, ow, kh*kw*C] patches of the padded input x, in (kh, kw, C) order.

  One concatenation of the k*k strided views (two of k views each, first along W then
  along H, compile faster but ran 10-50% slower on the CPU).
  """
  n, _, _, c = x.shape
  sh, sw = strides
  cols = [lax.slice(x, (0, i, j, 0), (n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return cols[0] if len(cols) == 1 else lax.concatenate(cols, 3)


def im2col_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                                batch_group_count=1, precision=None, preferred_element_type=None,
                                out_sharding=None):
  """lax.conv_general_dilated for NHWC x HWIO -> NHWC as im2col + one matmul.

  Same signature and result (up to float rounding: the sums run in another order)
  as lax.conv_general_dilated; `precision` and `preferred_element_type` go to the
  matmul. Raises NotImplementedError for dilation, grouped convolutions, other
  layouts or out_sharding.
  """
  why = _unsupported(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                     batch_group_count, out_sharding)
  if why:
    raise NotImplementedError(f"im2col_conv_general_dilated: {why} (use lax.conv_general_dilated)")
  if lhs.dtype != rhs.dtype:  # As lax.conv_general_dilated.
    raise TypeError(f"im2col_conv_general_dilated requires arguments to have the same dtypes, "
                    f"got {lhs.dtype}, {rhs.dtype}.")
  strides = tuple(int(s) for s in window_strides)
  if len(strides) != 2 or min(strides) < 1:
    raise ValueError(f"window_strides must be two positive ints, got {window_strides!r}")
  pads = _pads(lhs, rhs, strides, padding)
  kh, kw, cin, cout = rhs.shape
  if lhs.shape[3] != cin:
    raise ValueError(f"lhs has {lhs.shape[3]} channels but the kernel expects {cin}")
  oh, ow = _output_shape(lhs, rhs, strides, pads)
  if oh == 0 or ow == 0:  # An empty output, as lax.conv gives.
    return jnp.zeros((lhs.shape[0], oh, ow, cout), preferred_element_type or lhs.dtype)
  x = lhs
  if any(p != (0, 0) for p in pads):
    x = lax.pad(x, np.zeros((), x.dtype), ((0, 0, 0),) + tuple((lo, hi, 0) for lo, hi in pads) + ((0, 0, 0),))
  patches = _patches(x, kh, kw, oh, ow, strides)
  return lax.dot_general(patches, rhs.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
                         precision=precision, preferred_element_type=preferred_element_type)


def auto_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                              dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                              precision=None, preferred_element_type=None, out_sharding=None):
  """im2col where it was measured faster (CPU, small output maps), lax.conv elsewhere."""
  kwargs = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                precision=precision, preferred_element_type=preferred_element_type,
                out_sharding=out_sharding)
  if use_im2col(lhs, rhs, window_strides, padding, **kwargs):
    return im2col_conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def use_im2col(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
               dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
               preferred_element_type=None, out_sharding=None, platform=None):
  """The "auto" choice for one conv: True for im2col. platform defaults to jax.default_backend()."""
  del precision, preferred_element_type
  if (platform or jax.default_backend()) != "cpu":
    return False
  if _unsupported(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                  batch_group_count, out_sharding):
    return False
  if rhs.shape[:2] == (1, 1) and max(window_strides) > 1:
    return True
  return max(_output_shape(lhs, rhs, tuple(window_strides), padding)) <= AUTO_MAX_OUTPUT_SIZE


_FUNCTIONS = {"xla": lax.conv_general_dilated, "im2col": im2col_conv_general_dilated,
              "auto": auto_conv_general_dilated}


def conv_general_dilated_for(impl):
  """The conv_general_dilated function of `impl` ("xla", "im2col" or "auto"; see the module doc)."""
  if impl not in _FUNCTIONS:
    raise ConfigError(unknown_name_message("conv", impl, CONV_IMPLS))
  return _FUNCTIONS[impl]
