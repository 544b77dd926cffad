import json, sys, time
from pathlib import Path
sys.path.insert(0, "/work/main")
from al.yolo.detector import prepare_offline
prepare_offline(Path("/tmp/lrprobe/.yolo_config"))
from ultralytics import YOLO
name, lr, wb, mosaic = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]); ep = int(sys.argv[6]); bs = int(sys.argv[7])
data = sys.argv[5]
t = time.time()
m = YOLO("/work/main/benchmarks/weights/yolov8n_shapes.pt")
fits = []
m.add_callback("on_fit_epoch_end", lambda tr: fits.append(round(float(tr.fitness or 0), 3)))
m.train(data=data, epochs=ep, imgsz=96, batch=bs, nbs=bs, patience=10, optimizer="AdamW", lr0=lr, device="cpu",
        workers=0, seed=int(sys.argv[8]) if len(sys.argv) > 8 else 0, fliplr=0.0, mosaic=mosaic, close_mosaic=0, warmup_epochs=1, warmup_bias_lr=wb, plots=False,
        val=True, project="/tmp/lrprobe/runs", name=name, exist_ok=True, verbose=False)
best = YOLO(f"/tmp/lrprobe/runs/{name}/weights/best.pt")
r = best.val(data=data, split="test", imgsz=96, batch=32, device="cpu", plots=False, verbose=False)
print("RESULT", name, lr, wb, mosaic, "epochs", len(fits), "fit", fits, "test map50-95", round(float(r.box.map), 4), "secs", round(time.time()-t), flush=True)
