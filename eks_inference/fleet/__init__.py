"""Plan a fleet: from a price-performance report to the nodes, zones and monthly cost that serve a target load
(``eks-inference plan``). "Plan" in this project means only this.
"""
