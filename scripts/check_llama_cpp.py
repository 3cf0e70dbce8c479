"""Exit 0 when llama-cpp-python runs one completion with the embedded judge's GGUF on this CPU.

Run in a child process, so an illegal instruction (a wheel built for another CPU) is an exit code here,
not a crash of the caller: ``scripts/setup-test-env.sh`` rebuilds the wheel when this fails.
"""

import subprocess
import sys

PROBE = """
from llama_cpp import Llama
from quantmedic.judge.embedded import find_gguf
llm = Llama(model_path=str(find_gguf()), n_ctx=256, n_threads=1, verbose=False)
llm.create_chat_completion(messages=[{"role": "user", "content": "2+2?"}], max_tokens=2)
"""

if __name__ == "__main__":
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        print(f"llama-cpp-python failed one completion here (exit {run.returncode}): {run.stderr[-500:]}",
              file=sys.stderr)
    sys.exit(run.returncode)
