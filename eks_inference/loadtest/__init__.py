"""Load tester and price-performance report.

``eks-inference loadtest run`` drives one endpoint open loop (constant or Poisson arrivals, latency from
the intended send time) or closed loop (fixed concurrency) and writes one versioned result file per
client, with HDR histograms; ``eks-inference loadtest report`` merges any number of them exactly and
ranks targets by USD per million inferences at the best rate that meets the latency SLO.

Layout: pure logic in ``payloads``, ``plan``, ``stats``, ``aggregate``, ``prices``; I/O in ``client``
(HTTP engines), ``runner`` (schedules), ``storage`` (local / S3), ``results`` (file format), ``report``
(writers) and ``commands`` (CLI). ``stub_server`` is a trivial endpoint for calibrating the client.
"""
