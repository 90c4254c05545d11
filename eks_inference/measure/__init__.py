"""What a measurement is, shared by the load generator and the report: the step and target vocabulary, rate
schedules, HDR latency statistics with exact merge, a step merged and judged against the SLO, and the versioned
result file format. Pure: no clock, no network.
"""
