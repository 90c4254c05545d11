"""Operator tooling: a readable diff of what a deploy will change, and read-only preflight checks of an account.

Nothing here imports aws-cdk-lib: both commands read synthesized cloud assemblies (JSON) and call AWS
read-only APIs through boto3, so they run in CI and on a laptop without a CDK app in memory.
"""
