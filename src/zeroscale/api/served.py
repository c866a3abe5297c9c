"""What zeroscale serves of each operation it implements: the allow-lists behind ``allowlist.Refusals``.

"Served" means the value is used, or stored and returned where AWS returns it (Describe*, ListTags).
Everything else is refused by name with a ValidationException until it is served; a member that botocore
adds later is refused by default. Keep each table in step with the code that serves the members.
"""

from __future__ import annotations

from zeroscale.api.allowlist import ANY, Refusals, Rule, Table, at_most, only, under

_TAGS = {"Tags": ANY, "Tags.Key": ANY, "Tags.Value": ANY}

# One container: its image (a framework image or a pushed one), model data and environment are used;
# ContainerHostname is stored and described (SageMaker itself ignores it for a single container); Mode
# MultiModel makes ModelDataUrl a prefix of target models (router/multimodel.py), with MultiModelConfig.
_CONTAINER: dict[str, Rule] = {
    "Image": ANY,
    "ModelDataUrl": ANY,
    "Environment": ANY,
    "ContainerHostname": ANY,
    "Mode": ANY,
    "MultiModelConfig": ANY,
    "MultiModelConfig.ModelCacheSetting": ANY,
}

_LIST = {
    "SortBy": ANY,
    "SortOrder": ANY,
    "NextToken": ANY,
    "MaxResults": ANY,
    "NameContains": ANY,
    "CreationTimeBefore": ANY,
    "CreationTimeAfter": ANY,
}

_VARIANT: dict[str, Rule] = {
    "VariantName": ANY,
    "ModelName": ANY,
    "InitialInstanceCount": ANY,
    "InstanceType": ANY,
    "InitialVariantWeight": ANY,
    "ServerlessConfig": ANY,
    "ServerlessConfig.MemorySizeInMB": ANY,
    "ServerlessConfig.MaxConcurrency": ANY,
    "ServerlessConfig.ProvisionedConcurrency": ANY,
}


SAGEMAKER: Table = {
    "CreateModel": {
        "ModelName": ANY,
        "PrimaryContainer": ANY,
        **under("PrimaryContainer", _CONTAINER),
        "Containers": at_most(1),  # an inference pipeline (several containers) is not served yet
        **under("Containers", _CONTAINER),
        "ExecutionRoleArn": ANY,  # stored and described
        "EnableNetworkIsolation": only(False),  # workers of built-in runtimes have the host's network
        **_TAGS,
    },
    "DescribeModel": {"ModelName": ANY},
    "ListModels": _LIST,
    "DeleteModel": {"ModelName": ANY},
    "CreateEndpointConfig": {
        "EndpointConfigName": ANY,
        "ProductionVariants": ANY,
        **under("ProductionVariants", _VARIANT),
        # a copy of the production traffic, by its weight over the production variant's; answers discarded
        "ShadowProductionVariants": ANY,
        **under("ShadowProductionVariants", _VARIANT),
        "KmsKeyId": ANY,  # stored and described
        "ExecutionRoleArn": ANY,  # stored and described
        "EnableNetworkIsolation": only(False),
        # asynchronous inference (asyncinf/); OutputConfig.KmsKeyId is not served (results are not encrypted)
        "AsyncInferenceConfig": ANY,
        **under(
            "AsyncInferenceConfig",
            {
                "OutputConfig": ANY,
                "OutputConfig.S3OutputPath": ANY,
                "OutputConfig.S3FailurePath": ANY,
                "OutputConfig.NotificationConfig": ANY,
                "OutputConfig.NotificationConfig.SuccessTopic": ANY,
                "OutputConfig.NotificationConfig.ErrorTopic": ANY,
                "OutputConfig.NotificationConfig.IncludeInferenceResponseIn": ANY,
                "ClientConfig": ANY,
                "ClientConfig.MaxConcurrentInvocationsPerInstance": ANY,
            },
        ),
        **_TAGS,
    },
    "DescribeEndpointConfig": {"EndpointConfigName": ANY},
    "ListEndpointConfigs": _LIST,
    "DeleteEndpointConfig": {"EndpointConfigName": ANY},
    "CreateEndpoint": {"EndpointName": ANY, "EndpointConfigName": ANY, **_TAGS},
    "DescribeEndpoint": {"EndpointName": ANY},
    "ListEndpoints": {
        **_LIST,
        "LastModifiedTimeBefore": ANY,
        "LastModifiedTimeAfter": ANY,
        "StatusEquals": ANY,
    },
    "UpdateEndpoint": {
        "EndpointName": ANY,
        "EndpointConfigName": ANY,
        # false is what an update without them does: the new configuration's variants, no deployment policy
        "RetainAllVariantProperties": only(False),
        "RetainDeploymentConfig": only(False),
    },
    "UpdateEndpointWeightsAndCapacities": {
        "EndpointName": ANY,
        "DesiredWeightsAndCapacities": ANY,
        **under(
            "DesiredWeightsAndCapacities",
            {
                "VariantName": ANY,
                "DesiredWeight": ANY,
                "DesiredInstanceCount": ANY,
                "ServerlessUpdateConfig": ANY,
                "ServerlessUpdateConfig.MaxConcurrency": ANY,
                "ServerlessUpdateConfig.ProvisionedConcurrency": ANY,
            },
        ),
    },
    "DeleteEndpoint": {"EndpointName": ANY},
    "ListTags": {"ResourceArn": ANY, "NextToken": ANY, "MaxResults": ANY},
    # batch transform (batch/, control/transform_jobs.py, which checks the values)
    "CreateTransformJob": {
        "TransformJobName": ANY,
        "ModelName": ANY,
        "MaxConcurrentTransforms": ANY,
        "ModelClientConfig": ANY,
        "ModelClientConfig.InvocationsTimeoutInSeconds": ANY,
        "ModelClientConfig.InvocationsMaxRetries": ANY,
        "MaxPayloadInMB": ANY,
        "BatchStrategy": ANY,
        "Environment": ANY,
        "TransformInput": ANY,
        "TransformInput.DataSource": ANY,
        "TransformInput.DataSource.S3DataSource": ANY,
        "TransformInput.DataSource.S3DataSource.S3DataType": only("S3Prefix", "ManifestFile"),
        "TransformInput.DataSource.S3DataSource.S3Uri": ANY,
        "TransformInput.ContentType": ANY,
        "TransformInput.CompressionType": ANY,
        "TransformInput.SplitType": only("None", "Line", "RecordIO"),
        "TransformOutput": ANY,
        "TransformOutput.S3OutputPath": ANY,
        "TransformOutput.Accept": ANY,
        "TransformOutput.AssembleWith": ANY,
        "TransformResources": ANY,
        "TransformResources.InstanceType": ANY,  # the workers' memory, as for a real-time variant
        "TransformResources.InstanceCount": ANY,
        "DataProcessing": ANY,
        "DataProcessing.InputFilter": ANY,
        "DataProcessing.OutputFilter": ANY,
        "DataProcessing.JoinSource": ANY,
    },
    "DescribeTransformJob": {"TransformJobName": ANY},
    "ListTransformJobs": {
        **_LIST,
        "LastModifiedTimeBefore": ANY,
        "LastModifiedTimeAfter": ANY,
        "StatusEquals": ANY,
    },
    "StopTransformJob": {"TransformJobName": ANY},
}

LOGS: Table = {
    "DescribeLogGroups": {
        "logGroupNamePrefix": ANY,
        "logGroupNamePattern": ANY,
        "logGroupIdentifiers": ANY,
        "logGroupClass": ANY,  # every zeroscale log group is STANDARD
        "includeLinkedAccounts": only(False),  # no cross-account observability
        "nextToken": ANY,
        "limit": ANY,
    },
    "DescribeLogStreams": {
        "logGroupName": ANY,
        "logGroupIdentifier": ANY,
        "logStreamNamePrefix": ANY,
        "orderBy": ANY,
        "descending": ANY,
        "nextToken": ANY,
        "limit": ANY,
    },
    "GetLogEvents": {
        "logGroupName": ANY,
        "logGroupIdentifier": ANY,
        "logStreamName": ANY,
        "startTime": ANY,
        "endTime": ANY,
        "nextToken": ANY,
        "limit": ANY,
        "startFromHead": ANY,
        "unmask": ANY,  # nothing is ever masked (no data protection policies), as in AWS without one
    },
    "FilterLogEvents": {
        "logGroupName": ANY,
        "logGroupIdentifier": ANY,
        "logStreamNames": ANY,
        "logStreamNamePrefix": ANY,
        "startTime": ANY,
        "endTime": ANY,
        "filterPattern": ANY,
        "nextToken": ANY,
        "limit": ANY,
        "startFromHead": only(True),  # events come oldest first
        "interleaved": ANY,  # AWS ignores it too: results are always interleaved
        "unmask": ANY,
    },
}

# Application Auto Scaling (autoscaling/): real-time SageMaker variants, target tracking only. The namespace,
# dimension and resource are checked by the service and refused by name; StepScaling needs CloudWatch alarms
# and PredictiveScaling a forecast, neither served yet.
_SCOPE = {"ServiceNamespace": ANY, "ResourceId": ANY, "ScalableDimension": ANY}
_PAGES = {"MaxResults": ANY, "NextToken": ANY}
_TRACKING = "TargetTrackingScalingPolicyConfiguration"

APPLICATION_AUTOSCALING: Table = {
    "RegisterScalableTarget": {
        **_SCOPE,
        "MinCapacity": ANY,
        "MaxCapacity": ANY,
        "RoleARN": ANY,  # stored and described
        "SuspendedState": ANY,
        "SuspendedState.DynamicScalingInSuspended": ANY,
        "SuspendedState.DynamicScalingOutSuspended": ANY,
        "SuspendedState.ScheduledScalingSuspended": ANY,  # stored: there are no scheduled actions
    },
    "DescribeScalableTargets": {
        "ServiceNamespace": ANY,
        "ResourceIds": ANY,
        "ScalableDimension": ANY,
        **_PAGES,
    },
    "DeregisterScalableTarget": _SCOPE,
    "PutScalingPolicy": {
        **_SCOPE,
        "PolicyName": ANY,
        "PolicyType": only("TargetTrackingScaling"),
        _TRACKING: ANY,
        **under(
            _TRACKING,
            {
                "TargetValue": ANY,
                "PredefinedMetricSpecification": ANY,
                "PredefinedMetricSpecification.PredefinedMetricType": only(
                    "SageMakerVariantInvocationsPerInstance"
                ),
                "CustomizedMetricSpecification": ANY,
                "CustomizedMetricSpecification.MetricName": ANY,
                "CustomizedMetricSpecification.Namespace": ANY,
                "CustomizedMetricSpecification.Dimensions": ANY,
                "CustomizedMetricSpecification.Dimensions.Name": ANY,
                "CustomizedMetricSpecification.Dimensions.Value": ANY,
                "CustomizedMetricSpecification.Statistic": ANY,
                "CustomizedMetricSpecification.Unit": ANY,
                "ScaleOutCooldown": ANY,
                "ScaleInCooldown": ANY,
                "DisableScaleIn": ANY,
            },
        ),
    },
    "DescribeScalingPolicies": {**_SCOPE, "PolicyNames": ANY, **_PAGES},
    "DeleteScalingPolicy": {**_SCOPE, "PolicyName": ANY},
    "DescribeScalingActivities": {**_SCOPE, **_PAGES, "IncludeNotScaledActivities": only(False)},
}

# sagemaker-runtime InvokeEndpoint. Every other member is a request header, refused when present.
INVOKE_ENDPOINT = frozenset(
    {
        "EndpointName",
        "Body",
        "ContentType",
        "Accept",
        "CustomAttributes",
        "TargetVariant",
        "InferenceId",
        "TargetModel",  # a multi-model endpoint's target (router/multimodel.py)
    }
)

_BY_SERVICE = {"sagemaker": SAGEMAKER, "logs": LOGS, "application-autoscaling": APPLICATION_AUTOSCALING}


def refusals(service: str) -> Refusals:
    """The allow-list of a JSON 1.1 service by botocore name; ValueError for a service without one."""
    table = _BY_SERVICE.get(service)
    if table is None:
        raise ValueError(f"no allow-list in api/served.py for the service {service}")
    return Refusals(table)
