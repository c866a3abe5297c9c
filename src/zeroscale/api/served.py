"""What zeroscale serves of each operation it implements: the allow-lists behind ``allowlist.Refusals``.

"Served" means the value is used, or stored and returned where AWS returns it (Describe*, ListTags).
Everything else is refused by name with a ValidationException until it is served; a member that botocore
adds later is refused by default. Keep each table in step with the code that serves the members.
"""

from __future__ import annotations

from zeroscale.api.allowlist import ANY, Refusals, Rule, Table, only, under

_TAGS = {"Tags": ANY, "Tags.Key": ANY, "Tags.Value": ANY}

# An uncompressed model under an S3 prefix (artifacts/prefix.py), or one tar.gz object (as a ModelDataUrl),
# its ETag checked when given; control/models.py refuses the other pairings (one uncompressed object).
_MODEL_DATA_SOURCE: dict[str, Rule] = {
    "ModelDataSource": ANY,
    "ModelDataSource.S3DataSource": ANY,
    "ModelDataSource.S3DataSource.S3Uri": ANY,
    "ModelDataSource.S3DataSource.S3DataType": ANY,  # S3Prefix or S3Object, each value botocore knows
    "ModelDataSource.S3DataSource.CompressionType": ANY,  # None or Gzip (models.py: which with which)
    "ModelDataSource.S3DataSource.ETag": ANY,
}

# One container: its image (a framework image or a pushed one), or a model package (control/models.py
# resolves it), model data and environment are used; ContainerHostname names a container of several
# (router/pipeline.py) and is stored and described for one; Mode MultiModel makes ModelDataUrl a prefix of
# target models (router/multimodel.py), with MultiModelConfig.
_CONTAINER: dict[str, Rule] = {
    "Image": ANY,
    "ModelDataUrl": ANY,
    **_MODEL_DATA_SOURCE,
    "Environment": ANY,
    "ContainerHostname": ANY,
    "ModelPackageName": ANY,
    "Mode": ANY,
    "MultiModelConfig": ANY,
    "MultiModelConfig.ModelCacheSetting": ANY,
}

# A model package's container (InferenceSpecification.Containers): what a model made from it runs.
_PACKAGE_CONTAINER: dict[str, Rule] = {
    "Image": ANY,
    "ModelDataUrl": ANY,
    **_MODEL_DATA_SOURCE,
    "Environment": ANY,
    "ContainerHostname": ANY,
    "Framework": ANY,  # stored and described
    "FrameworkVersion": ANY,  # stored and described
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

# Guarded deployments (control/rollout.py, control/guarded.py): blue/green traffic shifting, rolling updates
# (traffic moved batch by batch; a rollback is all at once, so RollbackMaximumBatchSize is not served), and
# alarms that roll back.
_CAPACITY = {"Type": ANY, "Value": ANY}
_DEPLOYMENT: dict[str, Rule] = {
    "DeploymentConfig": ANY,
    **under(
        "DeploymentConfig",
        {
            "BlueGreenUpdatePolicy": ANY,
            "BlueGreenUpdatePolicy.TrafficRoutingConfiguration": ANY,
            **under(
                "BlueGreenUpdatePolicy.TrafficRoutingConfiguration",
                {
                    "Type": ANY,
                    "WaitIntervalInSeconds": ANY,
                    "CanarySize": ANY,
                    **under("CanarySize", _CAPACITY),
                    "LinearStepSize": ANY,
                    **under("LinearStepSize", _CAPACITY),
                },
            ),
            "BlueGreenUpdatePolicy.TerminationWaitInSeconds": ANY,
            "BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds": ANY,
            "RollingUpdatePolicy": ANY,
            "RollingUpdatePolicy.MaximumBatchSize": ANY,
            **under("RollingUpdatePolicy.MaximumBatchSize", _CAPACITY),
            "RollingUpdatePolicy.WaitIntervalInSeconds": ANY,
            "RollingUpdatePolicy.MaximumExecutionTimeoutInSeconds": ANY,
            "AutoRollbackConfiguration": ANY,
            "AutoRollbackConfiguration.Alarms": ANY,
            "AutoRollbackConfiguration.Alarms.AlarmName": ANY,
        },
    ),
}


SAGEMAKER: Table = {
    "CreateModel": {
        "ModelName": ANY,
        "PrimaryContainer": ANY,
        **under("PrimaryContainer", _CONTAINER),
        "Containers": ANY,  # several: an inference pipeline (Serial) or Direct (router/pipeline.py)
        **under("Containers", _CONTAINER),
        "InferenceExecutionConfig": ANY,
        "InferenceExecutionConfig.Mode": ANY,  # Serial or Direct: every value botocore knows
        "ExecutionRoleArn": ANY,  # stored and described
        "EnableNetworkIsolation": only(False),  # workers of built-in runtimes have the host's network
        **_TAGS,
    },
    "DescribeModel": {"ModelName": ANY},
    # the model registry (control/model_packages.py): versioned packages only
    "CreateModelPackageGroup": {"ModelPackageGroupName": ANY, "ModelPackageGroupDescription": ANY, **_TAGS},
    "DescribeModelPackageGroup": {"ModelPackageGroupName": ANY},
    "ListModelPackageGroups": _LIST,
    "DeleteModelPackageGroup": {"ModelPackageGroupName": ANY},
    "CreateModelPackage": {
        "ModelPackageGroupName": ANY,
        "ModelPackageDescription": ANY,
        "InferenceSpecification": ANY,
        "InferenceSpecification.Containers": ANY,
        **under("InferenceSpecification.Containers", _PACKAGE_CONTAINER),
        "InferenceSpecification.SupportedContentTypes": ANY,  # stored and described
        "InferenceSpecification.SupportedResponseMIMETypes": ANY,  # stored and described
        "InferenceSpecification.SupportedRealtimeInferenceInstanceTypes": ANY,  # stored and described
        "InferenceSpecification.SupportedTransformInstanceTypes": ANY,  # stored and described
        "ModelApprovalStatus": ANY,
        "CertifyForMarketplace": ANY,  # stored and described
        "MetadataProperties": ANY,
        "MetadataProperties.CommitId": ANY,
        "MetadataProperties.Repository": ANY,
        "MetadataProperties.GeneratedBy": ANY,
        "MetadataProperties.ProjectId": ANY,
        "CustomerMetadataProperties": ANY,
        "Domain": ANY,
        "Task": ANY,
        "SamplePayloadUrl": ANY,
        "ClientToken": ANY,
        **_TAGS,
    },
    "DescribeModelPackage": {"ModelPackageName": ANY},
    "ListModelPackages": {
        **_LIST,
        "ModelApprovalStatus": ANY,
        "ModelPackageGroupName": ANY,
        "ModelPackageType": ANY,
    },
    "UpdateModelPackage": {"ModelPackageArn": ANY, "ModelApprovalStatus": ANY, "ApprovalDescription": ANY},
    "DeleteModelPackage": {"ModelPackageName": ANY},
    "ListModels": _LIST,
    "DeleteModel": {"ModelName": ANY},
    "CreateEndpointConfig": {
        "EndpointConfigName": ANY,
        "ProductionVariants": ANY,
        **under("ProductionVariants", _VARIANT),
        # a copy of the production traffic, by its weight over the production variant's; answers discarded
        "ShadowProductionVariants": ANY,
        **under("ShadowProductionVariants", _VARIANT),
        # KmsKeyId is not served: nothing zeroscale stores is encrypted with a KMS key
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
    "CreateEndpoint": {"EndpointName": ANY, "EndpointConfigName": ANY, **_DEPLOYMENT, **_TAGS},
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
        # true: the variants the new configuration keeps keep their weights and instance counts
        "RetainAllVariantProperties": ANY,
        "ExcludeRetainedVariantProperties": ANY,
        "ExcludeRetainedVariantProperties.VariantPropertyType": ANY,
        **_DEPLOYMENT,
        "RetainDeploymentConfig": ANY,  # true: the DeploymentConfig CreateEndpoint was given
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
    "AddTags": {"ResourceArn": ANY, **_TAGS},
    "DeleteTags": {"ResourceArn": ANY, "TagKeys": ANY},
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

# Application Auto Scaling (autoscaling/): real-time SageMaker variants, target tracking, and step scaling
# invoked by CloudWatch alarms (cloudwatch/). The namespace, dimension and resource are checked by the service
# and refused by name; PredictiveScaling needs a forecast, not served.
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
        "PolicyType": only("TargetTrackingScaling", "StepScaling"),
        "StepScalingPolicyConfiguration": ANY,
        **under(
            "StepScalingPolicyConfiguration",
            {
                "AdjustmentType": ANY,
                "StepAdjustments": ANY,
                "StepAdjustments.MetricIntervalLowerBound": ANY,
                "StepAdjustments.MetricIntervalUpperBound": ANY,
                "StepAdjustments.ScalingAdjustment": ANY,
                "MinAdjustmentMagnitude": ANY,
                "Cooldown": ANY,
                # an alarm gives one datapoint per period: Average (the default) is what it means
                "MetricAggregationType": only("Average"),
            },
        ),
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

# CloudWatch (cloudwatch/): zeroscale's metrics (AWS/SageMaker) and metric alarms on them. Not served: metric
# math and percentiles (no distributions are kept), anomaly detection, composite alarms, tags, cross-account
# observability.
_DIMENSIONS = {"Dimensions": ANY, "Dimensions.Name": ANY, "Dimensions.Value": ANY}
_METRIC = {"Namespace": ANY, "MetricName": ANY, **_DIMENSIONS}

CLOUDWATCH: Table = {
    "GetMetricStatistics": {
        **_METRIC,
        "StartTime": ANY,
        "EndTime": ANY,
        "Period": ANY,
        "Statistics": ANY,
        "Unit": ANY,
    },
    "GetMetricData": {
        "MetricDataQueries": ANY,
        **under(
            "MetricDataQueries",
            {
                "Id": ANY,
                "MetricStat": ANY,
                "MetricStat.Metric": ANY,
                **under("MetricStat.Metric", _METRIC),
                "MetricStat.Period": ANY,
                "MetricStat.Stat": ANY,
                "MetricStat.Unit": ANY,
                "Label": ANY,
                "ReturnData": ANY,
            },
        ),
        "StartTime": ANY,
        "EndTime": ANY,
        "NextToken": ANY,
        "ScanBy": ANY,
        "MaxDatapoints": ANY,
    },
    "ListMetrics": {
        **_METRIC,
        "NextToken": ANY,
        "RecentlyActive": ANY,
        "IncludeLinkedAccounts": only(False),
    },
    "PutMetricAlarm": {
        "AlarmName": ANY,
        "AlarmDescription": ANY,
        "ActionsEnabled": ANY,
        "OKActions": ANY,
        "AlarmActions": ANY,
        "InsufficientDataActions": ANY,
        **_METRIC,
        "Statistic": ANY,
        "Period": ANY,
        "Unit": ANY,
        "EvaluationPeriods": ANY,
        "DatapointsToAlarm": ANY,
        "Threshold": ANY,
        "ComparisonOperator": ANY,
        "TreatMissingData": ANY,
    },
    "DescribeAlarms": {
        "AlarmNames": ANY,
        "AlarmNamePrefix": ANY,
        "AlarmTypes": ANY,
        "StateValue": ANY,
        "ActionPrefix": ANY,
        "MaxRecords": ANY,
        "NextToken": ANY,
    },
    "DescribeAlarmsForMetric": {**_METRIC, "Statistic": ANY, "Period": ANY, "Unit": ANY},
    "DescribeAlarmHistory": {
        "AlarmName": ANY,
        "AlarmTypes": ANY,
        "HistoryItemType": ANY,
        "StartDate": ANY,
        "EndDate": ANY,
        "MaxRecords": ANY,
        "NextToken": ANY,
        "ScanBy": ANY,
    },
    "DeleteAlarms": {"AlarmNames": ANY},
    "SetAlarmState": {"AlarmName": ANY, "StateValue": ANY, "StateReason": ANY, "StateReasonData": ANY},
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
        "TargetContainerHostname",  # a model with several containers, InferenceExecutionConfig Mode Direct
        "TargetModel",  # a multi-model endpoint's target (router/multimodel.py)
    }
)

# sagemaker-runtime InvokeEndpointWithResponseStream: the same (Accept arrives as X-Amzn-SageMaker-Accept),
# less TargetContainerHostname and TargetModel (models of several containers, multi-model endpoints do not
# stream). Refused by name: those two, InferenceComponentName, SessionId, PrefixAwareId.
INVOKE_ENDPOINT_WITH_RESPONSE_STREAM = INVOKE_ENDPOINT - {"TargetContainerHostname", "TargetModel"}

_BY_SERVICE = {
    "sagemaker": SAGEMAKER,
    "logs": LOGS,
    "application-autoscaling": APPLICATION_AUTOSCALING,
    "cloudwatch": CLOUDWATCH,
}


def refusals(service: str) -> Refusals:
    """The allow-list of a JSON 1.1 service by botocore name; ValueError for a service without one."""
    table = _BY_SERVICE.get(service)
    if table is None:
        raise ValueError(f"no allow-list in api/served.py for the service {service}")
    return Refusals(table)
