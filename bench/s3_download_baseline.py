"""The peer for reading from a bucket: what a user writes to fetch many small objects fast, a boto3 client shared by a
thread pool. Lists the prefix, downloads every object into memory, prints the count and bytes.

    python bench/s3_download_baseline.py ENDPOINT BUCKET PREFIX --threads 16   (credentials: AWS_* environment)
"""

import argparse
import concurrent.futures
import os

import boto3
from botocore.config import Config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("bucket")
    parser.add_argument("prefix")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    client = boto3.client("s3", endpoint_url=args.endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"),
                          config=Config(max_pool_connections=args.threads))
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=args.bucket, Prefix=args.prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]

    def fetch(key: str) -> int:
        return len(client.get_object(Bucket=args.bucket, Key=key)["Body"].read())

    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        sizes = list(pool.map(fetch, keys))
    print(f"{len(sizes):,} objects, {sum(sizes):,} bytes")


if __name__ == "__main__":
    main()
