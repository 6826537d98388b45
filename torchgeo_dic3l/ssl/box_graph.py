"""Box matching with fixed options, replayed as a CUDA graph on CUDA devices.

:func:`~torchgeo_dic3l.ssl.box_matching.match_boxes` is about a hundred small
kernels. On a GPU each costs more to launch from Python than to run, so in eager
mode the matching takes milliseconds of host time per step, as long as a good part
of a ResNet-50 step. Its shapes depend only on the batch size and it never reads a
tensor value on the host, so it can be captured once per batch size and replayed
with one launch. Random draws stay fresh at every replay: they come from the
default CUDA generator, whose state PyTorch advances for each replay of a graph.
"""

from dataclasses import dataclass, fields

import torch

from ..transforms.views import ViewGeometry
from .box_matching import BoxOptions, BoxPairs, match_boxes


@dataclass
class _Capture:
    """A captured graph with the static tensors it reads and writes.

    Attributes:
        graph: The captured CUDA graph.
        inputs: Static copies of the two views' geometries that the graph reads.
        outputs: Static result of the captured call.
    """

    graph: torch.cuda.CUDAGraph
    inputs: tuple[ViewGeometry, ViewGeometry]
    outputs: BoxPairs


class BoxMatcher:
    """Callable :func:`match_boxes` with fixed options, graph-captured on CUDA.

    On other devices, or with ``cuda_graph=False``, a call is a plain call of
    :func:`match_boxes`. On CUDA the first call for a batch size, device and dtype
    warms the function up on a side stream and captures it; later calls copy the
    geometry into the graph's static inputs, replay it and return copies of its
    outputs (so that results of earlier steps are never overwritten). An explicit
    random generator is not supported with graphs: the default CUDA generator is
    the one PyTorch keeps graph-safe.
    """

    def __init__(
        self, size: int, options: BoxOptions | None = None, cuda_graph: bool = False
    ) -> None:
        """Initialize a new BoxMatcher instance.

        Args:
            size: Side of the square views in pixels.
            options: Box counts and sizes; the defaults of :class:`BoxOptions` if None.
            cuda_graph: Capture and replay CUDA graphs on CUDA devices (off by default,
                as is the task's ``cuda_graphs``: not yet measured on a GPU).

        Raises:
            ValueError: If the views are smaller than the smallest box.
        """
        self.options = options or BoxOptions()
        self.options.check_view_size(size)
        self.size = size
        self.cuda_graph = cuda_graph
        self._captures: dict[tuple[int, int, torch.device, torch.dtype], _Capture] = {}

    def _match(self, geom1: ViewGeometry, geom2: ViewGeometry) -> BoxPairs:
        """Eager :func:`match_boxes` with this matcher's options."""
        return match_boxes(geom1, geom2, self.size, self.options)

    def _capture(self, geom1: ViewGeometry, geom2: ViewGeometry) -> _Capture:
        """Warm up on a side stream, then capture one call on static inputs."""
        static1, static2 = geom1.clone(), geom2.clone()
        # Warm-up builds the cached constant tables, which must not be made during
        # capture, and lets the allocator settle, as the CUDA-graph notes advise.
        side = torch.cuda.Stream(device=geom1.crops.device)
        side.wait_stream(torch.cuda.current_stream(geom1.crops.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._match(static1, static2)
        torch.cuda.current_stream(geom1.crops.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self._match(static1, static2)
        return _Capture(graph=graph, inputs=(static1, static2), outputs=outputs)

    def __call__(self, geom1: ViewGeometry, geom2: ViewGeometry) -> BoxPairs:
        """Match boxes between two views of a batch.

        Args:
            geom1: Geometry of the first views.
            geom2: Geometry of the second views.

        Returns:
            The matched boxes, as :func:`match_boxes` returns them.
        """
        crops = geom1.crops
        if not (self.cuda_graph and crops.is_cuda):
            return self._match(geom1, geom2)
        key = (crops.shape[0], geom1.size, crops.device, crops.dtype)
        capture = self._captures.get(key)
        if capture is None:
            capture = self._captures[key] = self._capture(geom1, geom2)
        capture.inputs[0].copy_(geom1)
        capture.inputs[1].copy_(geom2)
        capture.graph.replay()
        return BoxPairs(
            **{
                field.name: getattr(capture.outputs, field.name).clone()
                for field in fields(BoxPairs)
            }
        )
