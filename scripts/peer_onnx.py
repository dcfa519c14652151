#!/usr/bin/env python3
"""The Python peer of scripts/bench/api.sh: what a performance-minded Python team would
deploy to score one transaction per request.

- `train DATA.csv OUT.onnx`: scikit-learn RandomForestClassifier(100 trees, n_jobs=-1,
  random_state=42) on V1..V28 and Amount of every row (the same data fraudstream's model
  is trained on), converted to ONNX with skl2onnx (probabilities as a plain tensor, no
  ZipMap).
- `uvicorn peer_onnx:app --workers 2` with PEER_MODEL=OUT.onnx: FastAPI, one
  onnxruntime session per worker (one intra-op thread: the workers are the parallelism),
  POST /v1/score with one transaction in fraudstream's JSON schema, answering
  {"id", "score", "fraud", "threshold"}; 400 for a missing or non-numeric field.

Needs: pip install fastapi uvicorn onnxruntime skl2onnx scikit-learn pandas numpy
"""
import os
import sys

FEATURES = [f"V{i}" for i in range(1, 29)] + ["Amount"]
THRESHOLD = 0.5


def train(data: str, out: str) -> None:
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    df = pd.read_csv(data)
    x = df[FEATURES].to_numpy(dtype="float32")
    y = df["Class"].astype(int).to_numpy()
    model = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=42)
    model.fit(x, y)
    onnx = convert_sklearn(
        model,
        initial_types=[("x", FloatTensorType([None, len(FEATURES)]))],
        options={id(model): {"zipmap": False}},
    )
    with open(out, "wb") as f:
        f.write(onnx.SerializeToString())


def make_app():
    import numpy as np
    import onnxruntime as ort
    from fastapi import FastAPI, HTTPException

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        os.environ["PEER_MODEL"], sess_options=opts, providers=["CPUExecutionProvider"]
    )
    out_name = session.get_outputs()[1].name
    app = FastAPI()

    @app.post("/v1/score")
    def score(tx: dict):
        try:
            row = [float(tx[f]) for f in FEATURES]
        except (KeyError, TypeError, ValueError) as e:
            raise HTTPException(status_code=400, detail=f"bad field: {e}")
        x = np.asarray([row], dtype=np.float32)
        p = float(session.run([out_name], {"x": x})[0][0][1])
        return {"id": tx.get("id"), "score": p, "fraud": p >= THRESHOLD, "threshold": THRESHOLD}

    return app


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "train":
    train(sys.argv[2], sys.argv[3])
elif __name__ == "__main__":
    sys.exit(__doc__)
elif "PEER_MODEL" in os.environ:
    app = make_app()
