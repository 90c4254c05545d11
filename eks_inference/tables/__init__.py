"""Dated tables the rest of the project reads: AWS regions and their zones, EC2 instance types, on-demand prices.

Each says when it was taken; nothing here reaches AWS.
"""
