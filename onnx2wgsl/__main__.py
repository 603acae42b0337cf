import sys

from onnx2wgsl.compiler.cli import main

sys.exit(main())
