"""Sub-commands ``diff`` and ``preflight`` (operator tooling; needs the dev set: boto3, cfn-lint, PyYAML)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from eks_inference.cli.help import add_command
from eks_inference.ops.errors import OpsError

_NO_CREDENTIALS = ("no AWS credentials found; set AWS_PROFILE (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), "
                   "or in CI assume the deploy role through OIDC")


def register(sub: Any) -> None:
    p = add_command(
        sub, "diff",
        summary="show what a deploy changes: per stack, resource, Kubernetes object and field, with its effect",
        description="Compare two synthesized cloud assemblies (OLD NEW), or the deployed stacks of an environment "
                    "with a synthesized one (--deployed -c env=NAME). Kubernetes manifests, RayService serve "
                    "configs and Helm values are parsed and compared field by field; each change says what it "
                    "will do (replacement, node roll, new Ray cluster, in-place Serve update, Job run). Asset hash "
                    "churn is one line. Exit status: 0 no changes, 1 changes, 2 trouble.",
        example_lines=(
            "eks-inference diff base.out cdk.out",
            "eks-inference diff base.out cdk.out --format markdown > diff.md",
            "eks-inference diff --deployed -c env=dev            # against the stacks as deployed",
        ))
    p.add_argument("assemblies", nargs="*", metavar="OLD NEW", help="two cloud assembly directories")
    p.add_argument("--deployed", action="store_true",
                   help="compare the deployed stacks (CloudFormation GetTemplate) with --assembly")
    p.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                   help="CDK context, as for cdk: env=NAME (required with --deployed), account=, region=")
    p.add_argument("--assembly", type=Path, default=Path("cdk.out"), help="synthesized assembly for --deployed")
    p.add_argument("--app-dir", type=Path, default=Path("."), help="directory holding cdk.json")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text", help="output format")
    p.add_argument("--title", default="eks-inference diff", help="heading of the markdown output")
    p.set_defaults(func=run_diff)

    p = add_command(
        sub, "preflight",
        summary="read-only checks of the target account before a deploy (credentials, bootstrap, quotas, ...)",
        description="Check the account and region of an environment: credentials and account, CDK bootstrap "
                    "version against what the synthesized templates need, EC2 vCPU quotas for every node "
                    "group at max_size, instance offerings in every zone, EKS add-on versions for the "
                    "cluster's Kubernetes version, stack states and cluster name, local Docker buildx "
                    "platforms, the inf2 groups' pinned AMI release against the pinned Neuron SDK, and, where the "
                    "environment is deployed, a compiled artifact by the pinned Neuron compiler for every model "
                    "on inf2 (one failing row per missing one, with the compile command). Only Get/Describe/List "
                    "calls. Exit status: 0 ready, 1 a blocking check failed, 2 usage error.",
        example_lines=(
            "eks-inference preflight --env dev",
            "eks-inference preflight --env prod --json > preflight.json",
            "AWS_ENDPOINT_URL=http://127.0.0.1:5000 eks-inference preflight --env dev -c account=123456789012",
            "eks-inference preflight --env prod --artifacts-only   # after a compile: are the new SDK's there?",
        ))
    p.add_argument("--env", required=True, help="environment in cdk.json to check")
    p.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                   help="CDK context overrides (account=, region=)")
    p.add_argument("--assembly", type=Path, default=Path("cdk.out"),
                   help="synthesized assembly of the environment (bootstrap version, add-ons)")
    p.add_argument("--app-dir", type=Path, default=Path("."), help="directory holding cdk.json")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--artifacts-only", action="store_true",
                   help="check only the credentials and the compiled Neuron artifacts of the pinned SDK")
    p.set_defaults(func=run_preflight)


def _fail(command: str, message: str) -> int:
    print(f"eks-inference {command}: {message}", file=sys.stderr)
    return 2


def run_diff(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from eks_inference.ops import diff as d
    from eks_inference.ops.assembly import deployed_templates, load_assembly, stack_names
    from eks_inference.ops.project import parse_context_args, platform_config, read_context

    try:
        if args.deployed:
            if args.assemblies:
                raise OpsError("--deployed compares with --assembly; give no OLD NEW directories")
            context = read_context(args.app_dir, parse_context_args(args.context))
            if not context.get("env"):
                raise OpsError("--deployed needs -c env=NAME")
            config = platform_config(context)
            new = load_assembly(args.assembly)
            names = stack_names(config.env_name)
            if not any(n in new.templates for n in names):
                raise OpsError(f"{args.assembly} holds {', '.join(sorted(new.templates))}, not the stacks of "
                               f"{config.env_name!r}; run `make synth ENV={config.env_name}`")
            import boto3

            session = boto3.session.Session(region_name=config.region)
            cfn = session.client("cloudformation")
            old = deployed_templates(names, cfn)
            result = d.diff_templates(old, {n: new.templates.get(n) for n in names}, new.assets)
            if result.notes:  # a new Neuron SDK: say which of its artifacts the deployed repository lacks
                from eks_inference.ops.neuron_artifacts import deployed_lines

                result.notes += deployed_lines(config, cfn, session.client("s3"))
        else:
            if len(args.assemblies) != 2:
                raise OpsError("give two cloud assembly directories (OLD NEW), or --deployed -c env=NAME")
            old_a, new_a = (load_assembly(Path(p)) for p in args.assemblies)
            result = d.diff_assemblies(old_a, new_a)
    except OpsError as e:
        return _fail("diff", str(e))
    except NoCredentialsError:
        return _fail("diff", _NO_CREDENTIALS)
    except (ClientError, BotoCoreError) as e:
        return _fail("diff", f"reading the deployed stacks failed: {e}")
    render = {"text": d.render_text, "json": d.render_json}.get(args.format)
    sys.stdout.write(render(result) if render else d.render_markdown(result, title=args.title))
    return 1 if result.changed else 0


def run_preflight(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from eks_inference.ops import preflight as pf
    from eks_inference.ops.assembly import load_assembly, stack_names
    from eks_inference.ops.project import availability_zones, parse_context_args, platform_config, read_context

    try:
        context = read_context(args.app_dir, {**parse_context_args(args.context), "env": args.env})
        config = platform_config(context)
    except OpsError as e:
        return _fail("preflight", str(e))
    problems: list[str] = []
    assembly = None
    assembly_dir = args.assembly if args.assembly.is_absolute() else args.app_dir / args.assembly
    try:
        assembly = load_assembly(assembly_dir)
        if not any(n in assembly.templates for n in stack_names(config.env_name)):
            problems.append(f"{assembly_dir} is not a synth of {config.env_name!r}")
            assembly = None
    except OpsError:
        problems.append(f"no cloud assembly in {assembly_dir}")
    ctx = pf.Context(config=config, assembly=assembly, zones=availability_zones(context, config), problems=problems)
    aws = pf.Clients(config.region)
    try:
        checks = (pf.artifact_checks(ctx, aws) if args.artifacts_only else pf.run_checks(ctx, aws))
    except NoCredentialsError:
        if args.json:
            sys.stdout.write(pf.render_json([pf.Check("credentials", pf.FAIL, "no AWS credentials found",
                                                      _NO_CREDENTIALS)]))
        else:
            print(f"eks-inference preflight: {_NO_CREDENTIALS}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as e:
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        print(f"eks-inference preflight: AWS did not answer ({e})" + (f" at {endpoint}" if endpoint else ""),
              file=sys.stderr)
        return 1
    sys.stdout.write(pf.render_json(checks) if args.json else pf.render_table(checks))
    return 1 if pf.blocking(checks) else 0
