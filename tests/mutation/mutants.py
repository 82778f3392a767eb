"""The mutants of ``tests/mutation/run.py``: one behaviour that matters, broken in one place.

Each :class:`Mutant` names the file, the exact original text (it must occur exactly once in that
file), the replacement, and the pytest node ids that should fail when the behaviour breaks
(cheapest first: the run stops at the first failure). When code moves, change ``file`` (and the
texts if they changed): ``run.py`` refuses a mutant whose original text it does not find exactly
once, so a stale table fails loudly instead of reporting mutants that were never applied.

Not here: mutants the code makes equivalent. Removing the ``tf.stop_gradient`` between stages
in ``make_decoupled_step`` (``layerwise/training/steps.py``) changes nothing, because each stage's loss is differentiated on
its own tape, outside which the previous stage ran; ``decoupled-gradient-leak`` below breaks the
isolation for real (one tape over all stages). Calling the frozen prefix with ``training=True``
changes nothing either: Keras runs a frozen BatchNormalization in inference mode whatever the
``training`` argument; ``prefix-bn-training-mode-in-step`` also unfreezes it. The biased standard
deviation in ``similarity_matrix`` changes nothing: it scales every row by the same factor, which
the row normalisation removes; ``similarity-rms-not-std`` breaks the reduction for real.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    description: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


# Where the code lives (re-target here when files move).
STAGING = "layerwise/nn/network.py"
STEPS = "layerwise/training/steps/classification.py"
TRAINER_PY = "layerwise/training/trainer.py"
HEADS = "layerwise/nn/heads.py"
DOWNSAMPLING = "layerwise/nn/downsampling.py"
LAYERWISE_CNN = "models/layerwise_cnn.py"
SCHEDULES = "layerwise/training/schedules.py"
CHECKPOINTS = "layerwise/run/checkpoints.py"
FILES = "layerwise/files.py"
EXPORT = "layerwise/serving/servables.py"
PROBLEMS = "layerwise/training/problems.py"
MODES = "layerwise/training/modes.py"
PRUNING = "layerwise/training/pruning.py"
CALLBACKS = "layerwise/training/callbacks.py"
SPLIT = "layerwise/training/split.py"
TRAINING_LAYERS = "layerwise/nn/training_layers.py"
FIT = "layerwise/training/fit.py"
RESNET = "models/resnet.py"
UNROLLED = "models/unrolled.py"
PROXIMAL = "models/proximal.py"
CLI = "apps/cli.py"

# The tests that catch them.
TRAINER = "tests/test_trainer.py"
FROZEN_ALL = f"{TRAINER}::test_frozen_stage_is_bit_identical_after_next_stage_trains"
FROZEN_OFF = f"{FROZEN_ALL}[cache_off]"
ONE_STEP = f"{TRAINER}::test_one_step_loss_is_cross_entropy_plus_weight_decay_by_hand"
END_TO_END = f"{TRAINER}::test_end_to_end_trains_all_stages_for_the_same_total_epochs"
ENSEMBLE = f"{TRAINER}::test_ensemble_equals_weighted_average_by_hand"
NAN_SKIP = f"{TRAINER}::test_nan_loss_skip_keeps_weights_finite"
BLOCKS = "tests/test_building_blocks.py"
AUX_HEAD = f"{BLOCKS}::test_aux_head_shapes"
SPACE_TO_DEPTH = f"{BLOCKS}::test_space_to_depth_is_invertible"
DOWNSAMPLE_INPUT = f"{BLOCKS}::test_layerwise_cnn_downsample_input_like_imagenet"
RECIPES = "tests/test_recipes_lr.py"
MULTISTEP = f"{RECIPES}::test_multistep_and_warmup_give_the_papers_lr_at_given_iterations"
PLATEAU = f"{RECIPES}::test_plateau_decays_after_patience_epochs_without_improvement_and_not_before"
SCALE = "tests/test_scale.py"
CACHED = f"{SCALE}::test_cached_prefix_gives_the_same_stage_weights[memory]"
DECOUPLED_ALONE = f"{SCALE}::test_decoupled_stage_0_trains_exactly_as_if_it_were_alone"
DECOUPLED_PASS = f"{SCALE}::test_decoupled_trains_every_stage_in_one_pass"
CRASH = "tests/test_crash_safety.py"
FALLBACK = f"{CRASH}::test_latest_epoch_falls_back_past_a_corrupt_file"
TRUNCATED = f"{CRASH}::test_truncated_checkpoint_is_detected"
WRITE_FAILURE = f"{CRASH}::test_write_failure_is_a_clear_error_and_keeps_the_old_file"
CORRUPT_FINAL = f"{CRASH}::test_a_truncated_final_checkpoint_is_set_aside_and_the_stage_retrained"
RESUME = "tests/test_export_resume.py"
RESUME_MID = f"{RESUME}::test_resume_mid_stage_gives_the_uninterrupted_numbers"
RESUME_FINISHED = f"{RESUME}::test_resume_does_not_retrain_finished_stages"
EXPORTED = f"{RESUME}::test_exported_stages_load_in_a_fresh_process_and_match"
PAPER = "tests/test_paper_features.py"
KEEP_BEST = f"{PAPER}::test_keep_best_uses_a_validation_split_carved_from_train"
COMPRESSION_TESTS = "tests/test_compression.py"
TAYLOR = f"{COMPRESSION_TESTS}::test_taylor_scores_are_the_first_order_term_by_hand"
KEEP_STRONGEST = f"{COMPRESSION_TESTS}::test_keep_strongest_removes_exactly_the_weakest"
ZOO = "tests/test_zoo.py"
OPTION_A_BLOCK = f"{ZOO}::test_option_a_block_with_zeroed_residual_branch_is_relu_of_the_shortcut"
OPTION_A_PARAMS = f"{ZOO}::test_option_a_adds_no_parameters_to_the_plain_net"
ZERO_PAD = f"{ZOO}::test_option_a_shortcut_subsamples_and_zero_pads"
UNROLLED_TEST = "tests/test_optnets.py::test_analytic_net_is_k_iterations_of_its_algorithm"
CLI_TEST = "tests/test_cli.py::test_bad_flags_give_one_line_and_exit_code_2"
CLI_WIDTH = f"{CLI_TEST}[flags3-width must be positive]"
CLI_UNKNOWN_FLAG = f"{CLI_TEST}[flags8-no_such_flag]"
LIBRARY = "tests/test_library.py"
EARLY_STOP = f"{LIBRARY}::test_early_stopping_ends_the_stage_not_the_run"
RESIDUAL_CUT = f"{LIBRARY}::test_a_cut_through_a_residual_connection_names_the_nearest_valid_cuts"
COMPOSE = f"{LIBRARY}::test_split_keras_applications_compose_to_the_original[ResNet50-4]"
CALLBACK_ORDER = f"{LIBRARY}::test_callbacks_see_every_stage_epoch_and_batch_in_order"
KERAS_FILES = f"{LIBRARY}::test_every_stage_classifier_and_the_ensemble_round_trip_through_keras_files"
# ---- issue 21: data and serving
CLIENTS = "layerwise/serving/clients.py"
SERVING_INPUTS = "layerwise/serving/inputs.py"
REST_FORMAT = "layerwise/serving/rest_format.py"
CASCADE = "layerwise/serving/cascade.py"
AUGMENT = "layerwise/data/augment.py"
DATA_BASE = "layerwise/data/base.py"
SERVING_TESTS = "tests/test_serving.py"
NO_REDIRECT = f"{SERVING_TESTS}::test_the_rest_client_follows_no_redirect_to_any_scheme_or_host"
SERVED_ENSEMBLE = f"{SERVING_TESTS}::test_the_served_ensemble_is_the_2_to_the_j_weighted_average_of_the_stages"
UINT8_NORMALISED = f"{SERVING_TESTS}::test_uint8_signatures_normalise_raw_pixels_like_the_float_signatures_by_hand"
CASCADE_THRESHOLDS = f"{SERVING_TESTS}::test_cascade_thresholds_0_and_above_1_exit_first_and_last_like_the_cascade_by_hand"
SIGNATURE_CHECKS = f"{SERVING_TESTS}::test_classifier_signatures_refuse_wrong_shapes_dtypes_and_ranks"
DATA_TESTS = "tests/test_data.py"
HELD_OUT = f"{DATA_TESTS}::test_the_held_out_examples_of_a_seeded_split_are_the_documented_ones"
CUTOUT_FILL = f"{DATA_TESTS}::test_cutout_in_the_training_pipeline_sets_a_square_to_zero_after_normalisation"
LABELS_KEPT = f"{DATA_TESTS}::test_augmented_training_images_keep_their_own_labels"
# ---- issue 21: runtime
REPLAY = "layerwise/training/replay.py"
PRECISION_PY = "layerwise/precision.py"
PREFIX_CACHE = "layerwise/training/prefix_cache.py"
LOCAL = "tests/test_local_learning.py"
REPLAY_SLOTS = f"{LOCAL}::test_replay_buffer_samples_only_the_last_n_written_batches_and_each_of_them"
STEPS_IN_ROUND = f"{LOCAL}::test_steps_in_round_follow_the_stage_step_ratio"
ASYNC_STEPS = f"{LOCAL}::test_async_stages_take_their_ratio_of_steps_every_round"
ASYNC_FAST_THEN_SLOW = f"{ASYNC_STEPS}[fast_then_slow]"
ASYNC_SLOW_MIDDLE = f"{ASYNC_STEPS}[slow_middle]"
ASYNC_RUN_RATIOS = f"{LOCAL}::test_async_runs_are_seeded_and_step_at_their_ratios"
AUTO_PRECISION = f"{SCALE}::test_auto_precision_by_gpu_compute_capability_and_cpu_flags"
AUTO_CACHE = f"{SCALE}::test_auto_prefix_cache_caches_exactly_where_the_measured_costs_say_it_pays"
CACHED_EVAL = f"{SCALE}::test_a_cached_stage_evaluates_its_head_on_the_cached_test_features"
EVAL_CACHE_BUDGET = f"{SCALE}::test_the_test_split_is_cached_in_its_order_within_auto_s_budget"
# ---- issue 21: training
LOCAL_LOSSES_PY = "layerwise/training/local_losses.py"
WORKDIR_PY = "layerwise/run/workdir.py"
BALANCED_CUTS = f"{LIBRARY}::test_split_into_k_stages_picks_the_cuts_that_minimise_the_largest_stage"
SOFTMAX_LAYER = f"{LIBRARY}::test_a_separate_softmax_layer_is_left_out_of_the_final_head"
AUX_HEADS_CONFIG = f"{LIBRARY}::test_fit_trains_the_aux_heads_asked_for[config]"
AUX_HEADS_OWN = f"{LIBRARY}::test_fit_trains_the_aux_heads_asked_for[own]"
EARLY_STOP_BEST = f"{LIBRARY}::test_early_stopping_on_val_accuracy_maximises_it_and_restores_the_stages_best_epoch"
DROPOUT_RESUME = f"{LIBRARY}::test_a_run_with_dropout_resumed_in_the_same_process_gives_the_uninterrupted_numbers"
LOCAL_LEARNING = "tests/test_local_learning.py"
PREDSIM_BETA = f"{LOCAL_LEARNING}::test_a_non_default_predsim_beta_weighs_the_loss_fit_minimises"
PREDSIM_BETA_OBJECT = f"{PREDSIM_BETA}[object]"
PREDSIM_BETA_CONFIG = f"{PREDSIM_BETA}[config_field]"
INFOPRO_TEMPERATURE = f"{LOCAL_LEARNING}::test_infopros_weights_and_contrastive_temperature_reach_the_loss_fit_minimises"
NESTED_OPTIONS = f"{RESUME}::test_a_rerun_with_other_nested_options_is_refused_and_names_the_field"
# issue 22: files and threads
PORTABLE = "layerwise/nn/portable.py"
FILES_AND_THREADS = "tests/test_keras_files_and_threads.py"
STANDARD_LAYERS = f"{FILES_AND_THREADS}::test_standard_layers_computes_the_same_with_keras_layers_only"
FRESH_LOAD = f"{FILES_AND_THREADS}::test_saved_classifiers_ensembles_and_exports_load_in_a_fresh_process_with_keras_alone"
LOCK_PY = "layerwise/run/lock.py"
THREAD_LOCK = f"{FILES_AND_THREADS}::test_a_workdir_lock_excludes_another_thread_of_the_process_and_is_reentrant_in_its_own"
THREAD_FIT = f"{FILES_AND_THREADS}::test_a_second_fit_in_another_thread_is_refused_while_the_first_trains"
THREAD_WRITES = f"{FILES_AND_THREADS}::test_two_threads_writing_one_file_atomically_never_collide"
# issue 22: inputs
INPUTS = "tests/test_keras_inputs.py"
PIPELINES = "layerwise/data/pipelines.py"
FLOPS = "layerwise/nn/flops.py"
BAD_INPUT = f"{INPUTS}::test_inputs_a_user_gets_wrong_get_one_config_error_line_before_anything_is_written"
LATER_LABEL = f"{INPUTS}::test_a_label_out_of_range_in_a_later_batch_of_a_pipeline_stops_fit_with_one_config_error_line"
HEAD_1X1 = (f"{INPUTS}::test_the_default_head_turns_linear_on_1x1_features_says_so_once_and_a_given_head_is_refused_"
            "in_python_words")
CUSTOM_FLOPS = f"{INPUTS}::test_split_model_balances_custom_layers_by_what_they_compute"
AT_REFUSED = f"{INPUTS}::test_split_model_refuses_an_at_that_is_neither_a_count_nor_layer_names"
# ---- issue 22: spec
SPEC = "tests/test_keras_spec.py"
RECORDED_PY = "layerwise/config/recorded.py"
SPEC_AUXHEAD_DROPOUT = f"{SPEC}::test_an_aux_head_with_an_impossible_field_is_refused_when_made[dropout_1.5]"
SPEC_HEAD_ROUND_TRIP = f"{SPEC}::test_every_aux_head_field_round_trips_through_the_config_and_its_json[issue]"
SPEC_BUILTIN_LOSSES = f"{SPEC}::test_every_builtin_local_loss_round_trips_through_its_config_fields"
SPEC_OWN_OBJECTS = f"{SPEC}::test_a_registered_loss_and_head_of_ones_own_are_recorded_and_a_changed_one_refused"
SPEC_UNRECORDABLE = f"{SPEC}::test_an_object_that_cannot_be_recorded_is_refused_in_one_line_before_anything_is_written"
SPEC_UNREGISTERED_LOSS = f"{SPEC_UNRECORDABLE}[unregistered_loss]"
SPEC_LAMBDA_HEAD = f"{SPEC_UNRECORDABLE}[lambda_head]"
SPEC_RUN = f"{SPEC}::test_the_head_and_local_loss_are_recorded_resumed_refused_when_changed_and_restored"
VOCABULARY = "tests/test_keras_vocabulary.py"
ERRORS_PY = "layerwise/errors.py"
DID_YOU_MEAN_EPOCHS = f"{VOCABULARY}::test_an_unknown_keyword_gets_one_line_with_the_closest_name[epochs-epochs_per_stage]"
DID_YOU_MEAN_SPELLING = f"{VOCABULARY}::test_an_unknown_keyword_gets_one_line_with_the_closest_name[batchsize-batch_size]"
KERAS_HISTORY = f"{VOCABULARY}::test_fit_takes_x_and_y_prints_nothing_at_verbose_0_and_returns_a_keras_history"
VALIDATION_SPLIT = (
    f"{VOCABULARY}::test_validation_split_holds_out_the_last_fraction_and_classifiers_evaluate_as_recorded"
)
VALIDATION_FRACTION = f"{VOCABULARY}::test_validation_fraction_is_held_out_for_keep_best_and_the_plateau_schedule"
SHUFFLE_FALSE = f"{VOCABULARY}::test_shuffle_false_trains_on_the_arrays_in_their_order"
OLD_RECORD_NAMES = f"{VOCABULARY}::test_records_of_a_run_written_with_the_old_names_read_in_kerass"
RUNLOG_PY = "layerwise/run/runlog.py"
CLI_PLATEAU = "tests/test_recipes_lr.py::test_plateau_run_decays_on_validation_and_resumes_to_the_uninterrupted_numbers"
VERBOSE_2 = f"{VOCABULARY}::test_verbose_2_gives_a_line_per_epoch_and_no_progress_bar_even_on_a_terminal"
# ---- issue 25: trust3
ANSWERS = "layerwise/serving/answers.py"
DEADLINE = "layerwise/serving/deadline.py"
TRUST3 = "tests/test_trust3.py"
HOSTILE_REST = f"{TRUST3}::test_every_hostile_rest_answer_is_one_line_model_server_error"
HOSTILE_SHORT_ROWS = f"{HOSTILE_REST}[one row for two images]"
HOSTILE_SUM = f"{HOSTILE_REST}[probabilities not summing to 1]"
HOSTILE_SHORT_BODY = f"{HOSTILE_REST}[a short body]"
DRIP_BODY = f"{TRUST3}::test_the_timeout_is_a_total_deadline_against_a_dripping_server[body]"
MODEL_NAME_DOTS = f"{TRUST3}::test_model_names_that_could_change_the_url_are_refused[../../x]"
VERSIONS_PY = "layerwise/serving/versions.py"
MODELS_CONFIG_PY = "layerwise/serving/models_config.py"
LABEL_HISTORY = f"{TRUST3}::test_an_export_gives_its_label_to_its_own_version_only"
CANARY_KEEPS_STABLE = f"{LABEL_HISTORY}[stable then canary keeps stable]"
PARTIAL_NOT_CANARY = f"{LABEL_HISTORY}[a partial export is unfinished, never canary]"
NOT_OURS_NEVER_STABLE = f"{TRUST3}::test_a_folder_that_layerwise_did_not_write_is_never_stable"
HOSTILE_ROOT = "test_a_hostile_serving_root_is_a_config_error_naming_the_argument"
INJECTED_ROOT = f"{TRUST3}::{HOSTILE_ROOT}[/models\" }} config {{ name: \"evil\" base_path: \"/etc]"
RELATIVE_ROOT = f"{TRUST3}::{HOSTILE_ROOT}[../../../etc]"
INJECTED_NAME = f"{TRUST3}::test_hostile_servable_names_are_escaped_and_parse_back_as_themselves[a\"b]"
RUNNER_PY = "apps/runner.py"
MISFIT = f"{TRUST3}::test_a_record_that_does_not_fit_its_event_is_skipped_counted_and_said_once"
MISFIT_EMPTY_EPOCH = f"{MISFIT}[an epoch with no other key]"
MISFIT_STRING_PARAMS = f"{MISFIT}[params that are a string]"
REPORT_NEVER_FAILS_RUN = f"{TRUST3}::test_a_finished_run_is_never_failed_by_its_report"
HABITS = "tests/test_keras_habits.py"
PLATEAU_PER_STAGE = f"{HABITS}::test_reduce_lr_on_plateau_reduces_each_stages_learning_rate_and_restarts_at_every_stage"
LR_SETTER_REFUSED = f"{HABITS}::test_a_callback_that_sets_the_learning_rate_is_refused_where_a_schedule_moves_it"
CHECKPOINT_CLASSIFIER = f"{HABITS}::test_model_checkpoint_saves_each_stages_image_classifier_best_only_within_the_stage"
BACKUP_REFUSED = f"{HABITS}::test_backup_and_restore_is_refused_with_a_pointer_to_workdir"
LAMBDA_HOOKS = f"{HABITS}::test_lambda_callback_gets_every_batch_and_validation_hook_with_running_metrics"
COMPILED_OPTIMIZER = f"{HABITS}::test_the_optimizer_a_model_was_compiled_with_is_what_trains"
SCHEDULE_AFRESH = f"{HABITS}::test_an_optimizers_learning_rate_schedule_trains_afresh_in_every_stage"
OPTIMIZER_RECORDED = f"{HABITS}::test_an_optimizer_is_recorded_and_a_resume_with_another_is_refused_naming_the_field"
IGNORED_OPTIONS = f"{HABITS}::test_options_an_optimizer_object_would_ignore_and_unrecordable_optimizers_are_refused"
FIRST_LINE = f"{HABITS}::test_the_first_line_says_which_optimizer_and_learning_rate_train"
SPEC_RECORDED = f"{HABITS}::test_shuffle_and_validation_split_are_recorded_and_a_resume_with_another_is_refused"
STEPS_PER_EXECUTION = f"{HABITS}::test_steps_per_execution_runs_the_batch_hooks_once_per_device_call_as_keras_does"
# ---- issue 25: files and readers
LOCAL_DATA_PY = "layerwise/data/local.py"
SCHEMA_PY = "layerwise/config/schema.py"
TRUST3_FILES = "tests/test_trust3_files.py"
BAD_FOLDER = f"{TRUST3_FILES}::test_a_bad_image_folder_is_one_line_naming_the_path"
FOLDER_TEXT_PNG = f"{BAD_FOLDER}[a text file named .png]"
FOLDER_JUNK_PNG = f"{BAD_FOLDER}[a PNG signature followed by junk]"
FOLDER_EMPTY_CLASS = f"{BAD_FOLDER}[an empty class folder]"
FOLDER_TEST_ONLY_CLASS = f"{BAD_FOLDER}[a test class absent from train]"
NEGATIVE_VARIANCE = f"{TRUST3_FILES}::test_a_negative_batchnorm_variance_is_a_corrupt_checkpoint_set_aside_and_retrained"
NON_FINITE_OUTPUTS = (f"{TRUST3_FILES}::test_finite_weights_with_non_finite_outputs_are_a_corrupt_checkpoint_set_aside_"
                      "and_retrained")
MISSING_FIELD = f"{TRUST3_FILES}::test_a_config_json_missing_a_field_is_refused_naming_it_never_defaulted"
MISSING_SEED = f"{MISSING_FIELD}[resume-seed deleted]"
MISSING_GROUPED_LR = f"{MISSING_FIELD}[export-lr deleted from its group]"
CLIENT_IMAGES = f"{TRUST3_FILES}::test_images_a_client_cannot_send_are_one_serving_input_error_line"
CLIENT_1E300 = f"{CLIENT_IMAGES}[float64 1e300: finite, but infinite in float32]"
CLIENT_RAGGED = f"{CLIENT_IMAGES}[a ragged list of images (float)]"
DAMAGED_PB = f"{TRUST3_FILES}::test_a_damaged_saved_model_is_one_serving_input_error_line[saved_model.pb truncated]"
STOPPED_EARLY = f"{TRUST3_FILES}::test_a_stage_a_callback_stopped_is_final_says_so_and_a_rerun_keeps_it"
# ---- issue 22: restore without apps
RESTORE = "tests/test_keras_restore.py"
FIT_PY = "layerwise/training/fit.py"
RUN_EXPORTS_PY = "layerwise/export.py"
DATA_BASE_PY = "layerwise/data/base.py"
RESTORE_FRESH = f"{RESTORE}::test_restore_and_export_in_a_fresh_process_without_apps_equal_the_uninterrupted_run"
RESTORE_UINT8 = f"{RESTORE}::test_uint8_images_get_a_uint8_signature_that_casts_them"
NETWORK_FILE_PY = "layerwise/run/network_file.py"
RESTORE_UNREBUILDABLE = (
    f"{RESTORE}::test_a_network_keras_cannot_rebuild_trains_with_a_note_and_asks_for_build_network"
    "[config_misses_an_argument]"
)
# ---- issue 22: per-stage tuning
PER_STAGE = "tests/test_tuning_per_stage.py"
PROBLEMS_PY = "layerwise/training/problems.py"
CONFIG_GROUPS_PY = "layerwise/config/groups.py"
CONFIG_TRAIN_PY = "layerwise/config/train.py"
PER_STAGE_RUN = f"{PER_STAGE}::test_each_stage_trains_with_its_own_lr_weight_decay_head_and_epochs"
PER_STAGE_BAD_LR = f"{PER_STAGE}::test_bad_stage_overrides_are_refused_naming_the_stage_and_field[lr]"
PER_STAGE_COUNT = f"{PER_STAGE}::test_stage_overrides_are_refused_outside_layerwise_and_with_the_wrong_count"
# ---- issue 24: fidelity
LOCAL_VGG = "models/local_vgg.py"
LOCAL_PRESETS_PY = "apps/local_presets.py"
EXPERIMENTS_PY = "apps/experiments/greedy_cnns.py"
FIDELITY = "tests/test_fidelity.py"
PRE_DROPOUT = f"{FIDELITY}::test_local_losses_read_features_before_dropout_the_next_stage_reads_them_dropped"
DIM_IN_DECODER = f"{FIDELITY}::test_vgg11b_3x_uses_the_authors_default_dim_in_decoder"
POOLING_28 = f"{FIDELITY}::test_the_authors_pooling_at_28_pixels_leaves_rows_24_to_27_out"
INFOPRO_NUMBERS = f"{FIDELITY}::test_infopro_numbers_are_resnet32s_not_resnet110s"
BASELINES = f"{FIDELITY}::test_the_baselines_beside_the_numbers"
NESTEROV = f"{FIDELITY}::test_nesterov_sgd_is_pytorchs_update"
COSINE = f"{FIDELITY}::test_cosine_schedule_with_warm_up_is_infopros_per_epoch"
REFLECT = f"{FIDELITY}::test_reflect_padded_crop_mirrors_the_image"
INFOPRO_RECIPE = f"{FIDELITY}::test_infopro_presets_run_the_authors_recipe"
OPTIM_PY = "layerwise/training/optim.py"
REPLAY_PY = "layerwise/training/replay.py"
ZERO_INIT = f"{FIDELITY}::test_their_prediction_layers_start_at_zero"
REPLAY_STATS = f"{FIDELITY}::test_replay_statistics_count_ages_and_the_batches_ever_served"
PRIORITY_LIFO = f"{FIDELITY}::test_priority_lifo_serves_the_freshest_of_the_least_used_batches"
INFOPRO_DECODER = f"{FIDELITY}::test_infopro_decoder_upsamples_with_corners_aligned_and_has_their_bias_and_epsilon"
INFOPRO_PROJECTION = f"{FIDELITY}::test_infopro_projection_conv_pads_both_sides_as_their_padding_1"
# ---- issue 24: golden values
GOLDEN = "tests/test_golden.py"
GOLDEN_SIM = f"{GOLDEN}::test_sim_loss_and_its_input_gradient_equal_theirs"
GOLDEN_SUPCON = f"{GOLDEN}::test_supervised_contrastive_loss_and_its_gradient_equal_theirs"
GOLDEN_DECODER = f"{GOLDEN}::test_decoder_output_equals_theirs"
# ---- issue 26: roofline
ROOFLINE_PY = "layerwise/analysis/roofline.py"
ROOFLINE = "tests/test_roofline.py"
ROOFLINE_WALK = f"{ROOFLINE}::test_conv_shapes_walk_nested_models_and_strided_output_sizes"
ROOFLINE_PASSES = f"{ROOFLINE}::test_step_convs_passes_and_a_flop_weighted_limit"
ROOFLINE_REPORT = f"{ROOFLINE}::test_report_of_a_tiny_network_has_every_conv_shape_and_every_stage_fraction"
# ---- issue 24: fidelity s29
INFOPRO_HEADS_PY = "layerwise/training/infopro_heads.py"
SIMILARITY_PY = "layerwise/training/similarity.py"
FIDELITY_DGL = "tests/test_fidelity_dgl.py"
FIDELITY_S29_FIT_PY = "layerwise/training/fit_arguments.py"
FIDELITY_S29_LOSSES_PY = "layerwise/training/local_losses.py"
DENORMALISED_TARGET = f"{FIDELITY_DGL}::test_the_target_is_the_de_normalised_image_not_its_min_max_stretch"
INFOPRO_STATISTICS = f"{FIDELITY_DGL}::test_infopro_reads_its_statistics_and_records_them"
INFOPRO_RUN_STATISTICS = f"{FIDELITY_DGL}::test_an_infopro_run_records_the_data_statistics_and_resumes_with_them"
GOLDEN_PARTIAL = "tests/test_golden.py::test_reconstruction_loss_equals_theirs_where_a_channel_spans_less"
FIDELITY_S29_REPLAY_PY = "layerwise/training/replay.py"
FIDELITY_S29_GROUPS_PY = "layerwise/config/groups.py"
WORKER_PROBABILITIES = f"{FIDELITY_DGL}::test_worker_probabilities_follow_the_ratios_stage_0_counted_as_1"
RANDOM_WORKERS = f"{FIDELITY_DGL}::test_random_schedule_draws_one_worker_at_a_time_the_slowed_stage_less_often"
RANDOM_DEFAULT = f"{FIDELITY_DGL}::test_random_is_the_default_schedule_and_applies_to_the_async_mode_only"
ASYNC_RESUMES = "tests/test_local_learning.py::test_an_interrupted_async_run_resumes_with_its_replay_buffers"
FIDELITY_S29_LAYERWISE_CNN = "models/layerwise_cnn.py"
FIDELITY_S29_DGL_BUFFER = "models/dgl_buffer.py"
BUFFER_PRESET = f"{FIDELITY_DGL}::test_the_buffer_preset_builds_dgls_six_layer_max_pool_network_with_mlp_heads"
FIDELITY_S29_WORKDIR_PY = "layerwise/run/workdir.py"
EARLY_WORKDIR_CHECK = f"{FIDELITY_DGL}::test_a_workdir_check_before_the_data_is_read_skips_only_unfilled_statistics"
# ---- issue 26: oneDNN default
ONEDNN_PY = "layerwise/onednn.py"
ONEDNN = "tests/test_onednn.py"
ONEDNN_DEFAULT = f"{ONEDNN}::test_unset_on_x86_linux_turns_onednn_on_and_says_so"
ONEDNN_KEPT = f"{ONEDNN}::test_a_value_the_user_set_is_kept"
ONEDNN_REAL = f"{ONEDNN}::test_tensorflow_runs_with_what_was_decided"
ONEDNN_BENCH = f"{ONEDNN}::test_bench_compare_runs_each_variant_with_its_own_environment"
VALIDATION_FREQ = "tests/test_validation_freq.py"
FREQ_EVALUATES = f"{VALIDATION_FREQ}::test_every_nth_epoch_and_each_stages_last_are_evaluated_and_the_training_is_the_same"
FREQ_REFUSED = f"{VALIDATION_FREQ}::test_options_that_read_validation_accuracy_every_epoch_are_refused_with_it"
FREQ_CLI = f"{VALIDATION_FREQ}::test_the_cli_takes_it_and_refuses_zero_in_one_line"
# ---- issue 23: package layering
NETWORK_FILE_MOVES = "tests/test_package_moves.py::test_a_network_file_naming_the_modules_before_the_move_still_reads"
STRUCTURE = "tests/test_structure.py"
NO_UPWARD_IMPORTS = f"{STRUCTURE}::test_no_upward_imports"
NO_PACKAGE_CYCLES = f"{STRUCTURE}::test_no_package_cycles"
# ---- issue 23: precision decided once
PRECISION_ONCE = "tests/test_precision_once.py"
SAME_POLICIES = f"{PRECISION_ONCE}::test_the_cli_and_fit_give_the_network_the_same_dtype_policies"
SETTLE_SAYS_WHY = f"{PRECISION_ONCE}::test_settle_precision_decides_auto_only_and_says_why"
KEEPS_OTHER_POLICY = f"{PRECISION_ONCE}::test_a_layer_built_in_another_policy_keeps_it_and_float32_changes_nothing"

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ freezing, BatchNorm mode
    Mutant(
        "freeze-earlier-stages-trainable",
        "freeze_below leaves the earlier stages trainable",
        STAGING,
        "            stage.trainable = i >= j",
        "            stage.trainable = True",
        (FROZEN_ALL,),
    ),
    Mutant(
        "prefix-bn-training-mode-in-step",
        "the frozen prefix runs (BatchNorm in training mode) unfrozen inside the step",
        STEPS,
        '        if frozen is not None and prefix_mode == "no_tape":\n'
        "            x = frozen(x, training=False)\n",
        '        if frozen is not None and prefix_mode == "no_tape":\n'
        "            for stage in frozen.layers:\n"
        "                stage.trainable = True\n"
        "            x = frozen(x, training=True)\n"
        "            for stage in frozen.layers:\n"
        "                stage.trainable = False\n",
        (ONE_STEP, FROZEN_OFF),
    ),
    Mutant(
        "trained-stage-bn-inference-mode",
        "the stage being trained runs its BatchNorm in inference mode in the step",
        STEPS,
        "            logits = trainable(x, training=True)",
        "            logits = trainable(x, training=False)",
        (ONE_STEP,),
    ),
    Mutant(
        "bn-statistics-kept-after-nan",
        "a skipped (non-finite) batch leaves its BatchNorm statistics behind",
        STEPS,
        "    for variable, value in zip(variables, values):\n        variable.assign(value)",
        "    for variable, value in zip(variables, values):\n        pass",
        (NAN_SKIP,),
    ),
    # ------------------------------------------------------------------ heads
    Mutant(
        "head-max-pooling",
        "the auxiliary head max-pools instead of averaging to 2x2",
        HEADS,
        'x = average_pool_to(pooled, x.shape[1:3], name=f"{name}_avg")(x)',
        'x = keras.layers.AdaptiveMaxPooling2D(pooled, name=f"{name}_avg")(x)',
        (f"{AUX_HEAD}[7-1]", f"{AUX_HEAD}[8-2]"),  # [size-k]; max-pooling a 1x1 map crashes TensorFlow
    ),
    Mutant(
        "head-no-relu",
        "the auxiliary head's hidden convs have no ReLU",
        HEADS,
        'x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)',
        'x = keras.layers.Activation("linear", name=f"{name}_relu{i}")(x)',
        (AUX_HEAD,),
    ),
    Mutant(
        "head-no-batchnorm-before-linear",
        "the auxiliary head drops the BatchNorm before its linear layer",
        HEADS,
        "    if spec.batchnorm and spec.conv_layers:\n        x = FusedBatchNormalization(",
        "    if False:\n        x = FusedBatchNormalization(",
        (AUX_HEAD,),
    ),
    # ------------------------------------------------------------------ downsampling
    Mutant(
        "space-to-depth-lossy",
        "the invertible downsampling subsamples and tiles (loses information)",
        DOWNSAMPLING,
        "        return tf.nn.space_to_depth(inputs, self.block_size)",
        "        return tf.tile(inputs[:, :: self.block_size, :: self.block_size, :], [1, 1, 1, self.block_size**2])",
        (SPACE_TO_DEPTH,),
    ),
    Mutant(
        "downsample-input-ignored",
        "layerwise_cnn ignores downsample_input",
        LAYERWISE_CNN,
        "if j in downsample_at or (j == 0 and downsample_input):",
        "if j in downsample_at:",
        (DOWNSAMPLE_INPUT,),
    ),
    # ------------------------------------------------------------------ ensemble weights
    Mutant(
        "ensemble-uniform-weights",
        "the stage ensemble averages uniformly instead of 2^j weights",
        PROBLEMS,
        "    weights = np.array([2.0**j for j in range(members)])",
        "    weights = np.ones(members)",
        (ENSEMBLE, DECOUPLED_PASS),
    ),
    # ------------------------------------------------------------------ schedules
    Mutant(
        "end-to-end-lr-not-stretched",
        "end to end does not stretch the LR schedule over its J-times-longer run",
        PROBLEMS,
        "stretch=network.num_stages)",
        "stretch=1)",
        (END_TO_END,),
    ),
    Mutant(
        "step-schedule-ignores-stretch",
        "the step schedule ignores its stretch",
        SCHEDULES,
        "        every = config.decay_every * stretch * steps_per_epoch",
        "        every = config.decay_every * steps_per_epoch",
        (END_TO_END,),
    ),
    Mutant(
        "multistep-switches-late",
        "the multistep LR switches one iteration after its milestone",
        SCHEDULES,
        'tf.searchsorted(edges, tf.reshape(step, [1]), side="right")',
        'tf.searchsorted(edges, tf.reshape(step, [1]), side="left")',
        (MULTISTEP,),
    ),
    Mutant(
        "plateau-tie-counts-as-improvement",
        "reduce-on-plateau counts an equal validation accuracy as an improvement",
        SCHEDULES,
        "if self.best is None or val_accuracy > self.best:",
        "if self.best is None or val_accuracy >= self.best:",
        (PLATEAU,),
    ),
    # ------------------------------------------------------------------ weight decay
    Mutant(
        "weight-decay-doubled",
        "weight decay coefficient doubled in the loss",
        STEPS,
        "loss += tf.nn.scale_regularization_loss(0.5 * weight_decay * l2)",
        "loss += tf.nn.scale_regularization_loss(weight_decay * l2)",
        (ONE_STEP,),
    ),
    Mutant(
        "weight-decay-on-batchnorm-statistics",
        "weight decay also penalises non-trainable variables (BatchNorm moving statistics)",
        STEPS,
        "loss_of = classification_loss(variables, weight_decay, global_batch_size)",
        "loss_of = classification_loss(trainable.variables, weight_decay, global_batch_size)",
        (ONE_STEP,),
    ),
    # ------------------------------------------------------------------ prefix cache
    Mutant(
        "cache-ignores-example-order",
        "cached features are batched in stored order, not the epoch's permutation",
        TRAINER_PY,
        "batches = cache.batches(self.data.train_order(seed, epoch), self.config.batch_size)",
        "batches = cache.batches(np.arange(self.data.num_train), self.config.batch_size)",
        (CACHED,),
    ),
    Mutant(
        "cache-labels-misaligned",
        "cached features and their labels are gathered in different orders",
        "layerwise/training/prefix_cache.py",
        "            return features, tf.gather(labels, i)",
        "            return features, tf.gather(labels, tf.sort(i))",
        (CACHED,),
    ),
    # ------------------------------------------------------------------ checkpoints and fallback
    Mutant(
        "corrupt-epoch-checkpoint-raises",
        "a corrupt epoch checkpoint stops the run instead of falling back to the previous one",
        CHECKPOINTS,
        '                self.warn(f"warning: {e}; falling back to the previous checkpoint")',
        "                raise",
        (FALLBACK,),
    ),
    Mutant(
        "bad-zip-not-detected",
        "a checkpoint that is not a zip archive is not reported as corrupt",
        CHECKPOINTS,
        "    except Exception as e:  # zipfile/zlib/NumPy raise many types on damaged bytes; all mean \"unreadable\"",
        "    except (OSError, ValueError, KeyError, EOFError) as e:  # zipfile.BadZipFile forgotten",
        (FALLBACK, TRUNCATED),
    ),
    Mutant(
        "write-not-atomic",
        "checkpoints are written in place, not to a temporary file renamed over the old one",
        FILES,
        "    tmp = temporary_name(path)",
        "    tmp = path",
        (WRITE_FAILURE,),
    ),
    Mutant(
        "corrupt-final-crashes-the-run",
        "a corrupt final.npz crashes the run instead of being set aside and retrained",
        "layerwise/training/resume.py",
        "    try:\n"
        "        return load()\n"
        "    except ckpt.CorruptCheckpointError as e:\n",
        "    try:\n"
        "        return load()\n"
        "    except KeyboardInterrupt as e:\n",
        (CORRUPT_FINAL,),
    ),
    Mutant(
        "corrupt-final-deleted",
        "a corrupt final.npz is deleted instead of kept as final.npz.corrupt",
        CHECKPOINTS,
        '        files.rename(self.final_path, self.final_path + ".corrupt")',
        "        files.remove(self.final_path)",
        (CORRUPT_FINAL,),
    ),
    # ------------------------------------------------------------------ resume
    Mutant(
        "resume-restarts-from-scratch",
        "a resumed stage silently retrains from epoch 0 (and still logs that it resumes)",
        "layerwise/training/resume.py",
        """    ckpt.assign_arrays("model", model_variables, arrays, source)
    ckpt.assign_optimizer_arrays(optimizer_variables, arrays, source)
    history = [with_keras_names(r) for r in meta["history"]]
    runlog.keep_only(
        lambda r: r.get("problem") != name or (r["event"] == "epoch" and r["epoch"] < len(history))
    )
    log(f"{name}: resuming after epoch {len(history)} of {epochs}")
    return history""",
        """    history = [with_keras_names(r) for r in meta["history"]]
    runlog.keep_only(lambda r: r.get("problem") != name)
    log(f"{name}: resuming after epoch {len(history)} of {epochs}")
    return []""",
        (RESUME_MID,),
    ),
    Mutant(
        "resume-drops-optimizer-state",
        "a resumed stage restarts its optimizer (momentum, iteration count) from scratch",
        "layerwise/training/resume.py",
        '    ckpt.assign_optimizer_arrays(optimizer_variables, arrays, source)\n    history',
        "    history",
        (RESUME_MID,),
    ),
    Mutant(
        "finished-stage-retrained",
        "a rerun retrains finished stages instead of loading final.npz",
        "layerwise/training/resume.py",
        "    if checkpoints is None or not checkpoints.has_final():\n        return None",
        "    if True:\n        return None",
        (RESUME_FINISHED,),
    ),
    # ------------------------------------------------------------------ keep_best
    Mutant(
        "keep-best-not-restored",
        "keep_best records the best epoch but keeps the last epoch's weights",
        "layerwise/training/selection.py",
        '        ckpt.assign_arrays("best", variables, best, f"best epoch of {self.name}")',
        "        pass",
        (KEEP_BEST,),
    ),
    Mutant(
        "keep-best-picks-worst",
        "keep_best keeps the epoch with the lowest validation accuracy",
        "layerwise/training/selection.py",
        'record["val_accuracy"] > history[best["epoch"]]["val_accuracy"]',
        'record["val_accuracy"] < history[best["epoch"]]["val_accuracy"]',
        (KEEP_BEST,),
    ),
    # ------------------------------------------------------------------ export normalisation
    Mutant(
        "export-skips-mean",
        "the uint8 serving signature divides by std without subtracting the mean",
        EXPORT,
        "return _outputs(probabilities((tf.cast(images, tf.float32) - mean_t) / std_t), k)",
        "return _outputs(probabilities(tf.cast(images, tf.float32) / std_t), k)",
        (UINT8_NORMALISED, EXPORTED),
    ),
    Mutant(
        "export-float-normalised-twice",
        "the float serving signature normalises images that are already normalised",
        EXPORT,
        "        return _outputs(probabilities(checked(images, image_shape, finite=True)), k)",
        "        return _outputs(probabilities((checked(images, image_shape, finite=True) - mean_t) / std_t), k)",
        (UINT8_NORMALISED, EXPORTED),
    ),
    # ------------------------------------------------------------------ decoupled isolation
    Mutant(
        "decoupled-gradient-leak",
        "one tape over all stages, no stop_gradient: stage 1's loss trains stage 0",
        STEPS,
        """        for model, vs, loss_of, optimizer, scale in zip(models, variables, losses_of, optimizers, scaled):
            with tf.GradientTape() as tape:
                out, logits = model(x, training=True)
                loss = loss_of(logits, y)
                scaled_loss = optimizer.scale_loss(loss) if scale else loss
            grads.append(tape.gradient(scaled_loss, vs))
            losses.append(loss)
            x = tf.nest.map_structure(tf.stop_gradient, out)  # no gradient crosses a stage boundary
""",
        """        with tf.GradientTape(persistent=True) as tape:
            for model, loss_of in zip(models, losses_of):
                out, logits = model(x, training=True)
                losses.append(loss_of(logits, y))
                x = out
            total = tf.add_n(losses)
        grads = [tape.gradient(total, vs) for vs in variables]
""",
        (DECOUPLED_ALONE,),
    ),
    Mutant(
        "decoupled-record-uses-last-head",
        "every decoupled stage record reports the last stage's test accuracy",
        MODES,
        '        probs = trainer.probabilities(predict, "test") if trainer.data.num_test else None',
        '        probs = trainer.probabilities(predicts[-1], "test") if trainer.data.num_test else None',
        (DECOUPLED_PASS,),
    ),
    # ------------------------------------------------------------------ pruning scores
    Mutant(
        "taylor-scores-negated",
        "Taylor scores negated: the default criterion prunes the strongest filters",
        PRUNING,
        "    return np.abs(np.asarray(total) / max(count, 1.0))",
        "    return -np.abs(np.asarray(total) / max(count, 1.0))",
        (TAYLOR,),
    ),
    Mutant(
        "taylor-without-activation",
        "Taylor scores use the gradient alone, not activation x gradient",
        PRUNING,
        "return tf.reduce_sum(features * grad, axis=[0, 1, 2])",
        "return tf.reduce_sum(grad, axis=[0, 1, 2])",
        (TAYLOR,),
    ),
    Mutant(
        "prune-keeps-weakest",
        "pruning keeps the lowest-scored filters",
        PRUNING,
        'order = np.argsort(-np.asarray(scores), kind="stable")',
        'order = np.argsort(np.asarray(scores), kind="stable")',
        (KEEP_STRONGEST, TAYLOR),
    ),
    # ------------------------------------------------------------------ option-A shortcuts
    Mutant(
        "option-a-zero-shortcut-every-block",
        "every residual block adds zeros instead of its shortcut",
        RESNET,
        'y = keras.layers.Add(name=f"{name}_add")([y, skip])',
        'y = keras.layers.Add(name=f"{name}_add")([y, keras.ops.zeros_like(skip)])',
        (OPTION_A_BLOCK, OPTION_A_PARAMS),
    ),
    Mutant(
        "option-a-zero-shortcut-where-shape-changes",
        "the parameter-free shortcut outputs zeros where the shape changes",
        RESNET,
        '        return ZeroPadShortcut(stride, channels, name=f"{name}_pad")(x)',
        '        return keras.ops.zeros_like(ZeroPadShortcut(stride, channels, name=f"{name}_pad")(x))',
        (OPTION_A_BLOCK, OPTION_A_PARAMS),
    ),
    Mutant(
        "option-a-subsamples-odd-pixels",
        "the option-A shortcut subsamples from the second pixel on",
        RESNET,
        "x = inputs[:, :: self.stride, :: self.stride, :] if self.stride > 1 else inputs",
        "x = inputs[:, 1 :: self.stride, 1 :: self.stride, :] if self.stride > 1 else inputs",
        (ZERO_PAD, OPTION_A_BLOCK),
    ),
    # ------------------------------------------------------------------ unrolled nets' thresholds
    Mutant(
        "gd-threshold-without-step",
        "the unrolled ISTA threshold is lam instead of lam * t",
        UNROLLED,
        "self.theta = self._thresholds(np.full(num_layers, self.lam * t))",
        "self.theta = self._thresholds(np.full(num_layers, self.lam))",
        (UNROLLED_TEST,),
    ),
    Mutant(
        "agd2-threshold-inverted",
        "AGD2's thresholds multiply by theta_k instead of dividing",
        UNROLLED,
        "self.theta = self._thresholds(self.lam * t / thetas)",
        "self.theta = self._thresholds(self.lam * t * thetas)",
        (UNROLLED_TEST,),
    ),
    Mutant(
        "admm-threshold-halved",
        "ADMM-Net's threshold is lam / (2 rho) instead of lam / rho",
        UNROLLED,
        "self.theta = self._thresholds(np.full(num_layers, self.lam / rho))",
        "self.theta = self._thresholds(np.full(num_layers, self.lam / (2 * rho)))",
        (UNROLLED_TEST,),
    ),
    Mutant(
        "unrolled-soft-threshold-halved",
        "the networks' soft-threshold shrinks by half the threshold",
        UNROLLED,
        "    return tf.sign(v) * tf.nn.relu(tf.abs(v) - theta)",
        "    return tf.sign(v) * tf.nn.relu(tf.abs(v) - 0.5 * theta)",
        (UNROLLED_TEST,),
    ),
    Mutant(
        "proximal-soft-threshold-halved",
        "the textbook algorithms' soft-threshold shrinks by half the threshold",
        PROXIMAL,
        "    return np.sign(v) * np.maximum(np.abs(v) - theta, 0.0)",
        "    return np.sign(v) * np.maximum(np.abs(v) - 0.5 * theta, 0.0)",
        (UNROLLED_TEST,),
    ),
    # ------------------------------------------------------------------ CLI error handling
    Mutant(
        "cli-user-error-traceback",
        "a user error shows a traceback instead of one line",
        CLI,
        "            fail(str(e))",
        "            raise",
        (CLI_WIDTH,),
    ),
    Mutant(
        "cli-exit-code-1",
        "user errors exit with code 1 instead of 2",
        CLI,
        "EXIT_USAGE = 2",
        "EXIT_USAGE = 1",
        (CLI_WIDTH,),
    ),
    Mutant(
        "cli-flag-errors-uncaught",
        "a flag-parsing error is left to absl's usage dump",
        CLI,
        "    except flags.Error as e:",
        "    except KeyError as e:",
        (CLI_UNKNOWN_FLAG,),
    ),
    # ------------------------------------------------------------------ the library (split_model, fit, callbacks)
    Mutant(
        "split-accepts-residual-cut",
        "split_model accepts a cut where two tensors cross (inside a residual block)",
        SPLIT,
        "graph.valid.append(single is not None and set(live) == {id(single)})",
        "graph.valid.append(single is not None)",
        (RESIDUAL_CUT,),
    ),
    Mutant(
        "dense-logits-softmaxed",
        "a softmax classifier's head gives probabilities where logits are due",
        TRAINING_LAYERS,
        'return keras.ops.cast(outputs, "float32")',
        'return keras.ops.softmax(keras.ops.cast(outputs, "float32"))',
        (COMPOSE,),
    ),
    Mutant(
        "early-stopping-not-per-stage",
        "EarlyStopping is not restarted per stage: it ends the run",
        CALLBACKS,
        "STAGE_SCOPED = (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau, keras.callbacks.ModelCheckpoint)",
        "STAGE_SCOPED = (keras.callbacks.ReduceLROnPlateau, keras.callbacks.ModelCheckpoint)",
        (EARLY_STOP,),
    ),
    Mutant(
        "per-stage-stop-ends-run",
        "a per-stage callback's stop_training ends the whole run",
        CALLBACKS,
        'scope = "stage" if isinstance(callback, PerStage) else "run"',
        'scope = "run"',
        (EARLY_STOP,),
    ),
    Mutant(
        "callback-epochs-per-stage",
        "callbacks see each stage's epochs counted from 0 (CSV rows and TensorBoard steps collide)",
        "layerwise/training/epoch.py",
        "run_epoch = problem.first_epoch + epoch",
        "run_epoch = epoch",
        (CALLBACK_ORDER,),
    ),
    Mutant(
        "pipeline-validation-dropped",
        "a user's validation pipeline is ignored",
        "layerwise/data/pipelines.py",
        'for split, dataset in (("val", validation), ("test", test)):',
        'for split, dataset in (("test", test),):',
        (CALLBACK_ORDER,),
    ),
    Mutant(
        "result-ensemble-uniform",
        "Result.ensemble() averages the stages uniformly",
        FIT,
        'keras.layers.Rescaling(float(weight), name=f"weight_{j:02d}")',
        'keras.layers.Rescaling(1.0 / len(members), name=f"weight_{j:02d}")',
        (KERAS_FILES,),
    ),
    # ---- issue 21: data and serving
    Mutant(
        "rest-client-follows-redirects",
        "the REST client follows redirects (to another host, or ftp://) instead of refusing them",
        CLIENTS,
        "urllib.request.HTTPErrorProcessor(), urllib.request.HTTPDefaultErrorHandler()):",
        "urllib.request.HTTPRedirectHandler(), urllib.request.HTTPErrorProcessor(),\n"
        "                 urllib.request.HTTPDefaultErrorHandler()):",
        (NO_REDIRECT,),
    ),
    Mutant(
        "rest-client-default-opener",
        "the REST client opens URLs with urllib's default opener (every scheme, every redirect)",
        CLIENTS,
        "answer = fetch(_OPENER, request)",
        "answer = fetch(urllib.request.build_opener(), request)",
        (NO_REDIRECT,),
    ),
    Mutant(
        "cutout-fills-raw-zero",
        "the training pipeline's cutout fills raw 0 (black), not the mean colour (0 once normalised)",
        DATA_BASE,
        "base, policy, pca, fill = derive_seed(seed, epoch, 1), self.augment, self.pca, self.mean",
        "base, policy, pca, fill = derive_seed(seed, epoch, 1), self.augment, self.pca, None",
        (CUTOUT_FILL,),
    ),
    Mutant(
        "cutout-fill-dropped",
        "augment_image does not pass the fill colour on to cutout",
        AUGMENT,
        "return cutout(augment_image(image, base, seeds[0], pca), seeds[1], fill)",
        "return cutout(augment_image(image, base, seeds[0], pca), seeds[1])",
        (CUTOUT_FILL,),
    ),
    Mutant(
        "cutout-quarter-side",
        "cutout cuts a square of a quarter of the side instead of half",
        AUGMENT,
        "size = size or max(1, height // 2)",
        "size = size or max(1, height // 4)",
        (CUTOUT_FILL,),
    ),
    Mutant(
        "split-held-out-set-unseeded",
        "the stratified split holds out the first examples of each class; only their order is seeded",
        DATA_BASE,
        "        rng.shuffle(idx)\n        n_test",
        "        n_test",
        (HELD_OUT,),
    ),
    Mutant(
        "split-per-class-count-floored",
        "the stratified split holds out floor(n_class * fraction) examples instead of round(...)",
        DATA_BASE,
        "n_test = int(round(len(idx) * test_fraction))",
        "n_test = int(len(idx) * test_fraction)",
        (HELD_OUT,),
    ),
    Mutant(
        "split-held-out-from-the-end",
        "the stratified split holds out the last, not the first, examples of each shuffled class",
        DATA_BASE,
        "        test.append(idx[:n_test])\n        train.append(idx[n_test:])",
        "        test.append(idx[len(idx) - n_test:])\n        train.append(idx[:len(idx) - n_test])",
        (HELD_OUT,),
    ),
    Mutant(
        "augmented-labels-by-position",
        "the augmented pipeline takes each label by batch position, not from the image's source",
        DATA_BASE,
        "tf.gather(labels, j),",
        "tf.gather(labels, i),",
        (LABELS_KEPT,),
    ),
    Mutant(
        "augmented-images-by-position",
        "the augmented pipeline takes each image by batch position while its label follows the order",
        DATA_BASE,
        "augment_image(tf.cast(tf.gather(images, j), tf.float32), policy,",
        "augment_image(tf.cast(tf.gather(images, i), tf.float32), policy,",
        (LABELS_KEPT,),
    ),
    Mutant(
        "served-ensemble-uniform",
        "the served ensemble averages the stages uniformly instead of by 2^j",
        CASCADE,
        "total = total + (2.0**j / norm) * _probabilities(head, x)",
        "total = total + (1.0 / len(heads)) * _probabilities(head, x)",
        (SERVED_ENSEMBLE,),
    ),
    Mutant(
        "served-ensemble-weights-reversed",
        "the served ensemble weighs the first stage most (2^(J-1-j))",
        CASCADE,
        "total = total + (2.0**j / norm) * _probabilities(head, x)",
        "total = total + (2.0 ** (len(heads) - 1 - j) / norm) * _probabilities(head, x)",
        (SERVED_ENSEMBLE,),
    ),
    Mutant(
        "ensemble-uint8-skips-mean",
        "the ensemble's uint8 signature divides by std without subtracting the mean",
        EXPORT,
        "network.num_classes, mean, std, uint8)",
        "network.num_classes, 0.0 * np.asarray(mean), std, uint8)",
        (UINT8_NORMALISED,),
    ),
    Mutant(
        "cascade-uint8-normalised-backwards",
        "the cascade's uint8 signatures multiply by std and add the mean",
        EXPORT,
        "        return (tf.cast(images, tf.float32) - mean_t) / std_t",
        "        return tf.cast(images, tf.float32) * std_t + mean_t",
        (UINT8_NORMALISED,),
    ),
    Mutant(
        "cascade-last-stage-needs-threshold",
        "the cascade's last stage answers only the examples confident enough (the rest get zeros)",
        CASCADE,
        "            done = tf.ones(tf.shape(p)[:1], tf.bool)",
        "            done = tf.reduce_max(p, axis=-1) >= thresholds",
        (CASCADE_THRESHOLDS,),
    ),
    Mutant(
        "cascade-rows-not-masked",
        "the cascade keeps every example's row index after an exit: later answers land on the wrong rows",
        CASCADE,
        "            index = tf.boolean_mask(index, keep)\n",
        "",
        (CASCADE_THRESHOLDS,),
    ),
    Mutant(
        "cascade-threshold-input-ignored",
        "serving_float_threshold uses the threshold baked in at export, not the request's",
        EXPORT,
        "        return outputs(images, checked_thresholds(threshold, images))",
        "        return outputs(images, default_thresholds(images))",
        (CASCADE_THRESHOLDS,),
    ),
    Mutant(
        "signature-shape-unchecked",
        "the serving signatures no longer check the images' rank, size and channels in the graph",
        EXPORT,
        'images = tf.ensure_shape(images, (None, *image_shape), name="check_image_shape")',
        "images = tf.identity(images)",
        (SIGNATURE_CHECKS,),
    ),
    Mutant(
        "classifier-float-signature-takes-nan",
        "a stage's serving_float lets NaN and infinite pixels through",
        EXPORT,
        "return _outputs(probabilities(checked(images, image_shape, finite=True)), k)",
        "return _outputs(probabilities(checked(images, image_shape)), k)",
        (SIGNATURE_CHECKS,),
    ),
    Mutant(
        "client-casts-floats-to-uint8",
        "the client silently casts float images in 0..255 to uint8 for a uint8 signature",
        SERVING_INPUTS,
        "if np.issubdtype(images.dtype, np.integer) and images.min() >= 0 and images.max() <= 255:",
        "if images.min() >= 0 and images.max() <= 255:",
        (SIGNATURE_CHECKS,),
    ),
    Mutant(
        "client-skips-the-rank-check",
        "the client sends a batch of the wrong rank to the server",
        SERVING_INPUTS,
        "    if images.ndim != len(want):\n",
        "    if images.ndim < len(want) - 1:\n",
        (SIGNATURE_CHECKS,),
    ),
    # ---- issue 21: runtime
    Mutant(
        "replay-samples-unwritten-slots",
        "the replay buffer samples all N slots, also those never written (zeros)",
        REPLAY,
        "minval=0, maxval=filled, dtype=tf.int64)",
        "minval=0, maxval=self.size, dtype=tf.int64)",
        (REPLAY_SLOTS,),
    ),
    Mutant(
        "replay-never-samples-one-slot",
        "off by one: a full replay buffer never samples its last slot",
        REPLAY,
        "filled = tf.minimum(self.writes, self.size)",
        "filled = tf.minimum(self.writes, self.size - 1)",
        (REPLAY_SLOTS,),
    ),
    Mutant(
        "replay-push-wrong-slot",
        "the replay buffer writes one slot ahead of where the sampler looks",
        REPLAY,
        "slot = self.writes % self.size",
        "slot = (self.writes + 1) % self.size",
        (REPLAY_SLOTS,),
    ),
    Mutant(
        "replay-steps-ceil",
        "a stage's steps per round rounded up: ratio 0.5 steps in rounds 0, 2, ... (before its input exists)",
        REPLAY,
        "tf.floor((t + 1.0) * ratio) - tf.floor(t * ratio)",
        "tf.math.ceil((t + 1.0) * ratio) - tf.math.ceil(t * ratio)",
        (STEPS_IN_ROUND, ASYNC_FAST_THEN_SLOW),
    ),
    Mutant(
        "replay-round-off-by-one",
        "the asynchronous step reads the round after the current one",
        REPLAY,
        "t = round_index.read_value()",
        "t = round_index.read_value() + 1",
        (ASYNC_FAST_THEN_SLOW,),
    ),
    Mutant(
        "replay-ratio-of-previous-stage",
        "stage j steps at stage j - 1's ratio",
        REPLAY,
        "steps_in_round(ratios[j], t), 0)",
        "steps_in_round(ratios[j - 1], t), 0)",
        (ASYNC_FAST_THEN_SLOW,),
    ),
    Mutant(
        "replay-reads-empty-buffer",
        "a stage behind a slower one samples its still empty input buffer (1,0.5,1 crashes in round 0)",
        REPLAY,
        "steps_j = tf.where(buffers[j - 1].writes > 0, steps_in_round(ratios[j], t), 0)",
        "steps_j = steps_in_round(ratios[j], t)",
        (ASYNC_SLOW_MIDDLE,),
    ),
    Mutant(
        "async-step-ratios-dropped",
        "the decoupled mode ignores --stage_step_ratios (every stage one step per batch)",
        MODES,
        "ratios=check_async(network.num_stages, local.step_ratios,",
        "ratios=check_async(network.num_stages, [],",
        (ASYNC_RUN_RATIOS,),
    ),
    Mutant(
        "auto-precision-a100-float16",
        "precision auto: compute capability 8.0 (A100) gets float16, not bfloat16",
        PRECISION_PY,
        "if tuple(capability) >= (8, 0):",
        "if tuple(capability) > (8, 0):",
        (AUTO_PRECISION,),
    ),
    Mutant(
        "auto-precision-pascal-float16",
        "precision auto: compute capability 6.x (no fast float16) gets mixed_float16",
        PRECISION_PY,
        "if tuple(capability) >= (7, 0):",
        "if tuple(capability) >= (6, 0):",
        (AUTO_PRECISION,),
    ),
    Mutant(
        "auto-precision-unknown-capability-bfloat16",
        "precision auto: a GPU that reports no compute capability is taken for an Ampere",
        PRECISION_PY,
        'capability = gpu_details[0].get("compute_capability") or (0, 0)',
        'capability = gpu_details[0].get("compute_capability") or (8, 0)',
        (AUTO_PRECISION,),
    ),
    Mutant(
        "auto-precision-amx-ignored",
        "precision auto: a CPU with AMX but not AVX512-BF16 (bfloat16 units) stays float32",
        PRECISION_PY,
        'BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")',
        'BF16_CPU_FLAGS = ("avx512_bf16",)',
        (AUTO_PRECISION,),
    ),
    Mutant(
        "cached-stage-evaluates-images",
        "a cached stage's evaluations run the whole classifier on the images, not the stage and head on the cache",
        TRAINER_PY,
        "on_features = cache is not None and bool(cache.eval_splits)",
        "on_features = False",
        (CACHED_EVAL,),
    ),
    Mutant(
        "eval-cache-ignores-budget",
        "cache_prefix auto caches the test and validation splits beside the training split however large they are",
        PREFIX_CACHE,
        'return EVAL_SPLITS if option != "auto" or everything <= budget_mb * 2**20 else ()',
        "return EVAL_SPLITS",
        (EVAL_CACHE_BUDGET,),
    ),
    Mutant(
        "auto-cache-cost-inverted",
        "cache_prefix auto caches where the measured costs say recomputing is cheaper",
        PREFIX_CACHE,
        "return self.forward_s + self.epochs * self.gather_s <= MAX_CACHED_SHARE * self.epochs * self.forward_s",
        "return self.forward_s + self.epochs * self.gather_s >= MAX_CACHED_SHARE * self.epochs * self.forward_s",
        (AUTO_CACHE,),
    ),
    Mutant(
        "auto-cache-fill-not-counted",
        "cache_prefix auto forgets that filling the cache costs a forward pass",
        PREFIX_CACHE,
        "return self.forward_s + self.epochs * self.gather_s <= MAX_CACHED_SHARE * self.epochs * self.forward_s",
        "return self.epochs * self.gather_s <= MAX_CACHED_SHARE * self.epochs * self.forward_s",
        (AUTO_CACHE,),
    ),
    Mutant(
        "auto-cache-any-saving",
        "cache_prefix auto caches for any saving, however close the call",
        PREFIX_CACHE,
        "MAX_CACHED_SHARE = 0.5",
        "MAX_CACHED_SHARE = 1.0",
        (AUTO_CACHE,),
    ),
    Mutant(
        "auto-cache-measurement-ignored",
        "cache_prefix auto caches wherever it fits, without the measured costs",
        PREFIX_CACHE,
        "return \"memory\" if possible and (costs is None or costs().worth_caching()) else \"off\"",
        "return \"memory\" if possible else \"off\"",
        (AUTO_CACHE,),
    ),
    Mutant(
        "auto-cache-bytes-ignore-dtype",
        "feature bytes count 4 per number whatever the dtype (bfloat16 features counted double)",
        PREFIX_CACHE,
        "total += int(np.prod(t.shape[1:])) * tf.as_dtype(t.dtype).size",
        "total += int(np.prod(t.shape[1:])) * 4",
        (AUTO_CACHE,),
    ),
    Mutant(
        "auto-cache-budget-per-example",
        "cache_prefix auto compares one example's features with the memory budget",
        PREFIX_CACHE,
        "fits = feature_bytes(frozen, data.num_train) <= budget_mb * 2**20",
        "fits = feature_bytes(frozen, 1) <= budget_mb * 2**20",
        (AUTO_CACHE,),
    ),
    Mutant(
        "auto-cache-with-augmentation",
        "cache_prefix auto caches randomly augmented data (the same features every epoch)",
        PREFIX_CACHE,
        'order_known and data.augment == "none" and fits',
        "order_known and fits",
        (AUTO_CACHE,),
    ),
    Mutant(
        "auto-cache-unknown-order",
        "cache_prefix auto caches a source that cannot say its example order",
        PREFIX_CACHE,
        "possible = order_known and",
        "possible =",
        (AUTO_CACHE,),
    ),
    # ---- issue 21: training
    Mutant(
        "split-cuts-minimise-the-sum",
        "split_model's K stages minimise the sum of the stages' FLOPs (the same for every cut) instead of the largest",
        SPLIT,
        "(max(best[(k - 1, a)][0], cost(a, b)), best[(k - 1, a)][1] + [b])",
        "(best[(k - 1, a)][0] + cost(a, b), best[(k - 1, a)][1] + [b])",
        (BALANCED_CUTS,),
    ),
    Mutant(
        "split-balances-parameters",
        "split_model balances the stages' parameter counts, not their forward FLOPs",
        SPLIT,
        "graph.flops.append(layer_flops(op))",
        "graph.flops.append(op.count_params() if getattr(op, 'built', False) else 0)",
        (BALANCED_CUTS,),
    ),
    Mutant(
        "split-cuts-before-the-activation",
        "of cuts with the same FLOPs before them, split_model picks the first (between a block's sum and its ReLU)",
        SPLIT,
        "if k + 1 == len(valid) or cumulative[valid[k + 1] + 1] != cumulative[i + 1]]",
        "if True]",
        (BALANCED_CUTS,),
    ),
    Mutant(
        "split-softmax-layer-kept",
        "a model's separate softmax layer stays in the final head: it gives probabilities where logits are due",
        SPLIT,
        "        return last.input\n",
        "        return last.output\n",
        (SOFTMAX_LAYER,),
    ),
    Mutant(
        "split-softmax-activation-by-name",
        "an Activation('softmax') layer is recognised by comparing its activation with a string (never equal)",
        SPLIT,
        "isinstance(last, keras.layers.Activation) and last.activation is keras.activations.softmax",
        'isinstance(last, keras.layers.Activation) and last.activation == "softmax"',
        (SOFTMAX_LAYER,),
    ),
    Mutant(
        "fit-aux-width-not-in-config",
        "fit(head=AuxHead(width=W)) leaves aux_width at its default in the run's configuration",
        HEADS,
        "        values = (head.conv_layers, head.width, head.batchnorm,",
        "        values = (head.conv_layers, AuxHead().width, head.batchnorm,",
        (AUX_HEADS_CONFIG,),
    ),
    Mutant(
        "aux-head-conv-keeps-feature-width",
        "the auxiliary head's hidden convs keep the features' width instead of AuxHead.width",
        HEADS,
        '                spec.width, 3, padding="same", use_bias=not spec.batchnorm, name=f"{name}_conv{i}"',
        '                int(feature_shape[-1]), 3, padding="same", use_bias=not spec.batchnorm, '
        'name=f"{name}_conv{i}"',
        (AUX_HEADS_CONFIG,),
    ),
    Mutant(
        "fit-aux-head-fields-dropped",
        "the configuration's heads are built without its pooled_size, hidden_units and dropout",
        HEADS,
        "pooled_size=heads.pooled_size, hidden_units=tuple(heads.hidden_units), dropout=heads.dropout,",
        "",
        (AUX_HEADS_OWN,),
    ),
    Mutant(
        "early-stopping-accuracy-minimised",
        "a monitoring callback left at mode auto on an accuracy minimises it",
        CALLBACKS,
        '        callback.mode = "max"',
        '        callback.mode = "min"',
        (EARLY_STOP_BEST,),
    ),
    Mutant(
        "early-stopping-val-accuracy-direction-unknown",
        "val_accuracy's direction is not set (Keras cannot infer it from our uncompiled training models)",
        CALLBACKS,
        'MAXIMISED = ("accuracy", "val_accuracy", "test_accuracy")',
        'MAXIMISED = ("accuracy", "test_accuracy")',
        (EARLY_STOP_BEST,),
    ),
    Mutant(
        "early-stopping-never-restores",
        "a per-stage callback's on_train_end is not called at the stage's end: restore_best_weights does nothing",
        CALLBACKS,
        "        self.callback.on_train_end(logs)",
        "        pass",
        (EARLY_STOP_BEST,),
    ),
    Mutant(
        "early-stopping-record-of-the-last-epoch",
        "a stage whose best epoch EarlyStopping restored is recorded with its last epoch's accuracies",
        TRAINER_PY,
        '            best_epoch = restored - problem.first_epoch',
        "            pass",
        (EARLY_STOP_BEST,),
    ),
    Mutant(
        "predsim-beta-swapped",
        "predsim weighs the prediction term by beta and the similarity term by 1 - beta",
        LOCAL_LOSSES_PY,
        "return (1.0 - self.beta) * cross_entropy(logits, labels, global_batch_size) + self.beta * sim",
        "return self.beta * cross_entropy(logits, labels, global_batch_size) + (1.0 - self.beta) * sim",
        (PREDSIM_BETA_OBJECT,),
    ),
    Mutant(
        "predsim-config-beta-ignored",
        "the predsim_beta field never reaches the loss (the default beta is used)",
        LOCAL_LOSSES_PY,
        'config_fields: ClassVar[dict[str, str]] = {"beta": "predsim_beta"}',
        "config_fields: ClassVar[dict[str, str]] = {}",
        (PREDSIM_BETA_CONFIG,),
    ),
    Mutant(
        "fit-local-loss-object-ignored",
        "fit(local_loss=PredSim(beta=...)) records, and so trains, the built-in loss without its parameters",
        LOCAL_LOSSES_PY,
        "        fields = {flag: as_recorded(getattr(loss, parameter)) for parameter, flag in loss.config_fields.items()}",
        "        fields = {}",
        (PREDSIM_BETA_OBJECT,),
    ),
    Mutant(
        "infopro-temperature-ignored",
        "InfoPro's contrastive term uses the default temperature, not its own",
        LOCAL_LOSSES_PY,
        "supervised_contrastive_loss(outputs[PROJECTION], labels, self.temperature)",
        "supervised_contrastive_loss(outputs[PROJECTION], labels)",
        (INFOPRO_TEMPERATURE,),
    ),
    Mutant(
        "infopro-for-stage-drops-temperature",
        "InfoPro's per-module loss is rebuilt from its weights and class term: the temperature is lost",
        LOCAL_LOSSES_PY,
        "return dataclasses.replace(self, recon_weight=recon, recon_weight_last=recon, class_weight=cls,\n"
        "                                   class_weight_last=cls)",
        "return InfoPro(recon, recon, cls, cls, self.class_term)",
        (INFOPRO_TEMPERATURE,),
    ),
    Mutant(
        "seed-generators-keyed-by-path",
        "seed generator state is checkpointed under its per-process Keras path (seed_generator_<n>)",
        CHECKPOINTS,
        "        match = SEED_GENERATOR_PATH.match(v.path)",
        "        match = None",
        (DROPOUT_RESUME,),
    ),
    Mutant(
        "seed-generators-share-a-place",
        "every seed generator of a model is keyed by the same place",
        CHECKPOINTS,
        "            seed_generators += 1\n",
        "",
        (DROPOUT_RESUME,),
    ),
    Mutant(
        "seed-generator-state-not-restored",
        "a resumed run's seed generators (Dropout's masks) start again from their initial state",
        CHECKPOINTS,
        '        variable.assign(arrays[f"{prefix}/{key}"])',
        '        if not key.startswith("seed_generator@"):\n'
        '            variable.assign(arrays[f"{prefix}/{key}"])',
        (DROPOUT_RESUME,),
    ),
    Mutant(
        "workdir-nested-options-not-compared",
        "a rerun's nested options (model_options) are not compared with the stored ones",
        WORKDIR_PY,
        '            out += _differences(a, b, f"{prefix}{key}.")',
        "            continue",
        (NESTED_OPTIONS,),
    ),
    Mutant(
        "workdir-nested-difference-unnamed",
        "a nested difference is reported without the field it is in (width: 8 -> 16)",
        WORKDIR_PY,
        '_differences(a, b, f"{prefix}{key}.")',
        "_differences(a, b, prefix)",
        (NESTED_OPTIONS,),
    ),
    # ---- issue 22: files and threads
    Mutant(
        "portable-space-to-depth-misordered",
        "the standard space-to-depth keeps the row-block-column order: channels mix other pixels",
        PORTABLE,
        "keras.layers.Permute((1, 3, 2, 4, 5), dtype=dtype)",
        "keras.layers.Permute((1, 2, 3, 4, 5), dtype=dtype)",
        (STANDARD_LAYERS,),
    ),
    Mutant(
        "portable-weights-not-copied",
        "the standard layers replacing ours keep their initial weights (BatchNorm's moving statistics)",
        PORTABLE,
        "        new.set_weights(old.get_weights())\n",
        "        pass\n",
        (STANDARD_LAYERS,),
    ),
    Mutant(
        "classifiers-keep-fast-layers",
        "Result.classifiers keep the fused BatchNorm and block averaging: their files need layerwise's classes",
        PORTABLE,
        "    return compiled(standard_layers(keras.Model(logits_model.inputs, probabilities,",
        "    return compiled((keras.Model(logits_model.inputs, probabilities,",
        (FRESH_LOAD,),
    ),
    Mutant(
        "workdir-lock-reentrant-across-threads",
        "the workdir lock is re-entrant for every thread of the process: a second fit gets in",
        LOCK_PY,
        "        elif hold.thread is threading.current_thread():",
        "        elif True:",
        (THREAD_LOCK, THREAD_FIT),
    ),
    Mutant(
        "workdir-lock-keyed-by-given-path",
        "the lock registry is keyed by the path as given: a symlink to a held directory gets in",
        LOCK_PY,
        "    key = os.path.realpath(workdir)",
        "    key = workdir",
        (THREAD_LOCK,),
    ),
    Mutant(
        "temporary-name-per-process",
        "an atomic write's temporary name depends only on the pid: two threads write into one file",
        FILES,
        '    return f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}"',
        '    return f"{path}.tmp-{os.getpid()}"',
        (THREAD_WRITES,),
    ),
    # ---- issue 22: inputs
    Mutant(
        "one-hot-labels-unrecognised",
        "one-hot label arrays are flattened into 10x as many labels (the old 'images but labels' error)",
        PIPELINES,
        "    if y.ndim == 2 and y.shape[1] > 1:",
        "    if False:",
        (f"{BAD_INPUT}[one_hot_arrays]",),
    ),
    Mutant(
        "labels-above-the-classes-pass",
        "labels >= the network's number of classes are not refused before training",
        PIPELINES,
        "bad = np.flatnonzero((labels < 0) | (labels >= num_classes))",
        "bad = np.flatnonzero(labels < 0)",
        (f"{BAD_INPUT}[label_99_arrays]", f"{BAD_INPUT}[label_99_pipeline_first_batch]"),
    ),
    Mutant(
        "pipeline-labels-unchecked-after-the-first-batch",
        "a tf.data pipeline's later batches reach the loss with labels outside the classes (a bare graph error)",
        PIPELINES,
        "                tf.debugging.assert_less(y, tf.cast(num_classes, y.dtype), message=LABEL_CHECK),\n",
        "",
        (LATER_LABEL,),
    ),
    Mutant(
        "pipeline-label-error-not-translated",
        "the in-pipeline label check's error escapes fit as a bare InvalidArgumentError",
        PIPELINES,
        "        if LABEL_CHECK not in e.message:",
        "        if True:",
        (LATER_LABEL,),
    ),
    Mutant(
        "channels-first-not-recognised",
        "channels-first images get the generic size message, without np.moveaxis",
        PIPELINES,
        "    if len(image_shape) == 3 and fits(channels_last):",
        "    if False:",
        (f"{BAD_INPUT}[channels_first_arrays]",),
    ),
    Mutant(
        "image-shape-unchecked",
        "images of another size than the network's reach the training step (a bare Keras ValueError)",
        "layerwise/training/fit_arguments.py",
        "    check_image_shape(data.image_shape, network.input_shape)\n",
        "",
        (f"{BAD_INPUT}[9x9_arrays]",),
    ),
    Mutant(
        "default-head-refuses-1x1",
        "the default head is refused on 1x1 features instead of turning linear",
        PROBLEMS,
        "        if self.fit_features and isinstance(head, AuxHead):",
        "        if False:",
        (HEAD_1X1,),
    ),
    Mutant(
        "given-head-adapted-silently",
        "a head the user gave is silently replaced by a linear one on 1x1 features",
        "layerwise/training/fit_arguments.py",
        "fit_features=head is None,",
        "fit_features=True,",
        (HEAD_1X1,),
    ),
    Mutant(
        "custom-layers-cost-nothing",
        "split_model counts a custom layer as 0 FLOPs (valid cuts merge, stages unbalanced)",
        FLOPS,
        "    return 2 * _layer_macs(layer) if is_known(layer) else traced_flops(layer)",
        "    return 2 * _layer_macs(layer)",
        (CUSTOM_FLOPS,),
    ),
    Mutant(
        "custom-layer-cost-only-its-output",
        "a custom layer is costed by its output's size, not by what its traced graph computes",
        FLOPS,
        "    return max(int(counted), floor)",
        "    return floor",
        (CUSTOM_FLOPS,),
    ),
    Mutant(
        "split-at-unchecked",
        "split_model(model, 2.5) or split_model(model, True) is not refused clearly",
        SPLIT,
        "    _check_at(at)\n",
        "",
        (f"{AT_REFUSED}[2.5]", f"{AT_REFUSED}[True]"),
    ),
    # ---- issue 22: spec
    Mutant(
        "auxhead-fields-unchecked",
        "AuxHead(dropout=1.5) is accepted when made (it trains without error)",
        HEADS,
        "            object.__setattr__(self, \"hidden_units\", tuple(self.hidden_units))\n        self.validate()",
        "            object.__setattr__(self, \"hidden_units\", tuple(self.hidden_units))",
        (SPEC_AUXHEAD_DROPOUT,),
    ),
    Mutant(
        "auxhead-dropout-not-recorded",
        "fit(head=AuxHead(dropout=...)) leaves aux_dropout at its default in config.json",
        HEADS,
        "                  float(head.dropout), head.pre_pool,",
        "                  0.0, head.pre_pool,",
        (SPEC_HEAD_ROUND_TRIP, SPEC_RUN),
    ),
    Mutant(
        "infopro-temperature-not-recorded",
        "InfoPro(temperature=...) is recorded without its temperature: the configuration's rebuilds another loss",
        LOCAL_LOSSES_PY,
        '"class_term": "infopro_class_term", "temperature": "infopro_temperature",',
        '"class_term": "infopro_class_term",',
        (SPEC_BUILTIN_LOSSES,),
    ),
    Mutant(
        "builtin-subclass-recorded-by-name",
        "a LocalLoss subclass of a built-in is recorded by the built-in's name: its own parameters are lost",
        LOCAL_LOSSES_PY,
        "if type(loss) is LOCAL_LOSSES.get(loss.name):",
        "if loss.name in LOCAL_LOSSES:",
        (SPEC_OWN_OBJECTS,),
    ),
    Mutant(
        "recorded-object-round-trip-unchecked",
        "an object Keras cannot deserialise (an unregistered class) is recorded as if it could be rebuilt",
        RECORDED_PY,
        "            rebuilt = keras.saving.deserialize_keras_object(form)",
        "            rebuilt = obj",
        (SPEC_UNREGISTERED_LOSS,),
    ),
    Mutant(
        "unrecordable-head-accepted-with-workdir",
        "a head that cannot be recorded (a lambda) trains into a workdir whose config.json does not describe it",
        "layerwise/training/fit_arguments.py",
        "head_options(head, required=required)",
        "head_options(head, required=False)",
        (SPEC_LAMBDA_HEAD,),
    ),
    # ---- issue 22: vocabulary
    Mutant(
        "fit-epochs-hint-lost",
        "fit(epochs=...) is refused without pointing at epochs_per_stage",
        ERRORS_PY,
        "    if hints and name in hints:",
        "    if False:",
        (DID_YOU_MEAN_EPOCHS,),
    ),
    Mutant(
        "fit-no-close-match",
        "an unknown fit keyword is refused without the closest accepted name",
        ERRORS_PY,
        "    close = difflib.get_close_matches(name, sorted(known), n=1)",
        "    close = []",
        (DID_YOU_MEAN_SPELLING,),
    ),
    Mutant(
        "fit-verbose-0-still-logs",
        "fit(verbose=0) still prints its lines (the precision it chose)",
        FIT,
        "        log = silent if verbose == 0 else print",
        "        log = print",
        (KERAS_HISTORY,),
    ),
    Mutant(
        "history-keeps-stage-epoch-name",
        "Result.history keeps the callbacks' stage_epoch list beside epoch",
        FIT,
        '        logs["epoch"] = logs.pop("stage_epoch")',
        '        logs["epoch"] = logs["stage_epoch"]',
        (KERAS_HISTORY,),
    ),
    Mutant(
        "validation-split-first-fraction",
        "validation_split holds out the first fraction of the arrays, not the last (as Keras does)",
        "layerwise/training/fit_arguments.py",
        "    return (x[:split_at], y[:split_at]), (x[split_at:], y[split_at:])",
        "    split_at = len(x) - split_at\n    return (x[split_at:], y[split_at:]), (x[:split_at], y[:split_at])",
        (VALIDATION_SPLIT,),
    ),
    Mutant(
        "classifiers-not-compiled",
        "Result.classifiers are returned uncompiled: evaluate fails",
        PORTABLE,
        "    return compiled(standard_layers(keras.Model(logits_model.inputs, probabilities, name=name or logits_model.name)))",
        "    return standard_layers(keras.Model(logits_model.inputs, probabilities, name=name or logits_model.name))",
        (VALIDATION_SPLIT,),
    ),
    Mutant(
        "fit-validation-fraction-ignored",
        "fit(validation_fraction=...) holds nothing out (keep_best and the plateau schedule then crash)",
        "layerwise/training/fit_arguments.py",
        "        data = hold_out(data, config)\n",
        "        pass\n",
        (VALIDATION_FRACTION,),
    ),
    Mutant(
        "arrays-shuffled-anyway",
        "shuffle=False still trains on a new order of the arrays every epoch",
        DATA_BASE,
        "        if not self.shuffle:\n            return np.arange(self.num_train)\n",
        "",
        (SHUFFLE_FALSE,),
    ),
    Mutant(
        "old-record-names-not-read",
        "metrics.jsonl of a run written with train_acc/val_acc/test_acc is read without Keras's names",
        RUNLOG_PY,
        "            records.append(with_keras_names(record))",
        "            records.append(record)",
        (OLD_RECORD_NAMES,),
    ),
    Mutant(
        "fit-holds-out-the-clis-split-again",
        "fit refuses the CLI's data, whose validation_fraction split load_data has held out already",
        "layerwise/training/fit_arguments.py",
        "    if config.validation_fraction and not (isinstance(train, DataSource) and data.num_val):",
        "    if config.validation_fraction:",
        (CLI_PLATEAU,),
    ),
    Mutant(
        "verbose-2-draws-the-bar",
        "verbose=2 draws a progress bar on a terminal, as verbose=1 does",
        "layerwise/training/epoch.py",
        "        live = self.verbose == 1 and sys.stdout.isatty()",
        "        live = self.verbose and sys.stdout.isatty()",
        (VERBOSE_2,),
    ),
    # ---- issue 25: trust3
    Mutant(
        "rest-answer-unchecked",
        "the REST client hands back whatever the server answered (one row for two images)",
        REST_FORMAT,
        "    return check_outputs(columns, rows, expected, server)\n",
        "    return {k: np.asarray(v) for k, v in columns.items()}\n",
        (HOSTILE_SHORT_ROWS,),
    ),
    Mutant(
        "answer-probability-sums-unchecked",
        "probabilities that do not sum to 1 come back as a right answer",
        ANSWERS,
        "if sums.size and np.max(np.abs(sums - 1.0)) > SUM_TOLERANCE:",
        "if False:",
        (HOSTILE_SUM,),
    ),
    Mutant(
        "answer-short-body-accepted",
        "a body shorter than its Content-Length is taken as the whole answer",
        DEADLINE,
        "    if response.length:",
        "    if False:",
        (HOSTILE_SHORT_BODY,),
    ),
    Mutant(
        "timeout-per-read-not-total",
        "the REST timeout bounds each read, not the request (a dripping server keeps the caller)",
        DEADLINE,
        "        timer.start()\n",
        "",
        (DRIP_BODY,),
    ),
    Mutant(
        "model-name-unchecked",
        "a model name like ../../x goes into the URL path as it is",
        CLIENTS,
        "if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):",
        "if not isinstance(model, str):",
        (MODEL_NAME_DOTS,),
    ),
    Mutant(
        "labels-replace-all",
        "an export with label canary drops the servable's other labels (stable lost)",
        VERSIONS_PY,
        "    labels = _older_rule(servable_dir, below=version) if recorded is None else recorded\n",
        "    labels = {}\n",
        (CANARY_KEEPS_STABLE,),
    ),
    Mutant(
        "labels-partial-gets-the-label",
        "a partial export gets the label asked for (canary, stable) instead of unfinished",
        VERSIONS_PY,
        "    if is_complete(files.join(servable_dir, str(version))):\n        labels[label] = version",
        "    if True:\n        labels[label] = version",
        (PARTIAL_NOT_CANARY,),
    ),
    Mutant(
        "labels-foreign-versions-stable",
        "a version layerwise did not write (someone else's SavedModel) is labelled stable",
        VERSIONS_PY,
        "    return is_saved_model(version_dir) and (",
        "    return is_saved_model(version_dir) or (",
        (NOT_OURS_NEVER_STABLE,),
    ),
    Mutant(
        "models-config-unescaped",
        "strings go into models.config unescaped (a name with a quote injects entries)",
        MODELS_CONFIG_PY,
        """    return '"' + value.replace("\\\\", "\\\\\\\\").replace('"', '\\\\"') + '"'""",
        """    return '"' + value + '"'""",
        (INJECTED_NAME,),
    ),
    Mutant(
        "serving-root-quotes-allowed",
        "a serving_root with quotes is accepted (and injects entries into models.config)",
        MODELS_CONFIG_PY,
        "    elif any(c in serving_root for c in \"\\\"'\\\\\") or _has_control_characters(serving_root):",
        "    elif _has_control_characters(serving_root):",
        (INJECTED_ROOT,),
    ),
    Mutant(
        "serving-root-relative-allowed",
        "a relative serving_root (../../../etc) is accepted",
        MODELS_CONFIG_PY,
        '    if not isinstance(serving_root, str) or not serving_root.startswith("/"):',
        "    if not isinstance(serving_root, str):",
        (RELATIVE_ROOT,),
    ),
    Mutant(
        "records-unchecked",
        "readers take every JSON object in metrics.jsonl ({\"event\": \"epoch\"} fails the report with KeyError)",
        RUNLOG_PY,
        "    fitting = [r for r in records if record_fits(r)]\n",
        "    fitting = records\n",
        (MISFIT_EMPTY_EPOCH,),
    ),
    Mutant(
        "record-metric-types-unchecked",
        "a record's metrics are not checked to be numbers (params: \"many\" fails the report's table)",
        RUNLOG_PY,
        "    return all(record[key] is None or _is(record[key], (int, float)) for key in METRICS if key in record)\n",
        "    return True\n",
        (MISFIT_STRING_PARAMS,),
    ),
    Mutant(
        "report-failure-fails-the-run",
        "a report that cannot be written after training fails the finished run",
        RUNNER_PY,
        "    except Exception as e:  # noqa: BLE001",
        "    except ImportError as e:  # noqa: BLE001",
        (REPORT_NEVER_FAILS_RUN,),
    ),
    # ---- issue 22: keras habits
    Mutant(
        "plateau-not-per-stage",
        "ReduceLROnPlateau keeps its best and wait across stages",
        CALLBACKS,
        "        if hasattr(self.callback, \"best\"):\n            self.callback.best = self.initial_best\n        self.callback.on_train_begin(logs)",
        "        self.callback.on_train_begin(logs) if not isinstance(self.callback, keras.callbacks.ReduceLROnPlateau) else None",
        (PLATEAU_PER_STAGE,),
    ),
    Mutant(
        "lr-setter-with-schedule-accepted",
        "ReduceLROnPlateau is accepted with the step decay: Keras fails mid-run with a TypeError",
        SCHEDULES,
        "    elif changes_within_a_problem(config.schedule):",
        "    elif False:",
        (LR_SETTER_REFUSED,),
    ),
    Mutant(
        "checkpoint-saves-training-model",
        "ModelCheckpoint saves the stage's training model (features -> logits), not its image classifier",
        CALLBACKS,
        "            if saves:\n",
        "            if False:\n",
        (CHECKPOINT_CLASSIFIER,),
    ),
    Mutant(
        "checkpoint-best-across-stages",
        "ModelCheckpoint(save_best_only=True) compares a stage's epochs with the earlier stages' best",
        CALLBACKS,
        "STAGE_SCOPED = (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau, keras.callbacks.ModelCheckpoint)",
        "STAGE_SCOPED = (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau)",
        (CHECKPOINT_CLASSIFIER,),
    ),
    Mutant(
        "backup-and-restore-accepted",
        "BackupAndRestore is accepted and silently restores nothing",
        CALLBACKS,
        "    if isinstance(callback, keras.callbacks.BackupAndRestore):",
        "    if False:",
        (BACKUP_REFUSED,),
    ),
    Mutant(
        "lambda-batch-hooks-missed",
        "a LambdaCallback's batch functions (set on the instance) are called once per epoch only",
        CALLBACKS,
        "    return name in vars(target) or getattr(type(target), name)",
        "    return getattr(type(target), name)",
        (LAMBDA_HOOKS,),
    ),
    Mutant(
        "batch-logs-last-batch-only",
        "on_train_batch_end gets the batch's own loss, not the epoch's running mean as Keras's metrics",
        "layerwise/training/epoch.py",
        '                stop = self.callbacks.batch_end(running.steps - 1, running.batch_logs(totals.skipped)) or stop',
        '                stop = self.callbacks.batch_end(running.steps - 1, {"loss": float(totals.loss_sum), '
        '"accuracy": running.correct / running.seen}) or stop',
        (LAMBDA_HOOKS,),
    ),
    Mutant(
        "validation-test-hooks-missed",
        "the validation pass calls no on_test_* hook",
        "layerwise/training/epoch.py",
        'val_probs = self.evaluator.validation_probabilities(predict) if self.data.num_val and evaluated else None',
        'val_probs = self.evaluator.probabilities(predict, "val") if self.data.num_val and evaluated else None',
        (LAMBDA_HOOKS,),
    ),
    Mutant(
        "compiled-optimizer-ignored",
        "a model compiled before split_model trains with the default SGD, not its optimizer",
        SPLIT,
        "    network.optimizer = compiled_optimizer\n",
        "    network.optimizer = None\n",
        (COMPILED_OPTIMIZER,),
    ),
    Mutant(
        "optimizer-shared-across-stages",
        "every stage continues the first stage's optimizer (its schedule does not restart)",
        "layerwise/training/fit_arguments.py",
        "        return {\"optimizer_object\": form}, lambda: keras.optimizers.deserialize(template)",
        "        return {\"optimizer_object\": form}, lambda: optimizer",
        (SCHEDULE_AFRESH,),
    ),
    Mutant(
        "optimizer-not-recorded",
        "an optimizer object is not recorded: a resume with another one is accepted",
        "layerwise/training/fit_arguments.py",
        "        form = recorded.record(optimizer, \"optimizer\", is_optimizer_or_factory, required=required)",
        "        form = {}",
        (OPTIMIZER_RECORDED,),
    ),
    Mutant(
        "ignored-lr-accepted",
        "fit(optimizer=Adam(...), lr=0.1) trains at Adam's rate and ignores lr silently",
        "layerwise/training/fit_arguments.py",
        "        replaced = sorted(set(config_changes) & set(OPTIMIZER_OPTIONS))",
        "        replaced = []",
        (IGNORED_OPTIONS,),
    ),
    Mutant(
        "optimizer-line-missing",
        "the run does not say which optimizer and learning rate train",
        TRAINER_PY,
        '            self.log(f"optimizer: {describe_optimizer(self.config, self.optimizer_factory)}")',
        "            pass",
        (FIRST_LINE,),
    ),
    Mutant(
        "shuffle-not-recorded",
        "fit's shuffle and validation_split are not recorded: a resume with others is accepted",
        "layerwise/training/fit_arguments.py",
        "    config_changes.update(validation_split=validation_split, shuffle=shuffle)",
        "    pass",
        (f"{SPEC_RECORDED}[first0-second0-shuffle]", f"{SPEC_RECORDED}[first1-second1-validation_split]"),
    ),
    Mutant(
        "steps-per-execution-ignored",
        "steps_per_execution is accepted but every batch still calls the hooks",
        "layerwise/training/epoch.py",
        "        group = (self.options.steps_per_execution\n                 or (",
        "        group = (0\n                 or (",
        (STEPS_PER_EXECUTION,),
    ),
    # ---- issue 25: files and readers
    Mutant(
        "image-headers-unchecked",
        "a text file named x.png in an image_folder class is not recognised as not an image",
        LOCAL_DATA_PY,
        "    check_image_headers(ds.file_paths)\n",
        "",
        (FOLDER_TEXT_PNG,),
    ),
    Mutant(
        "undecodable-image-unnamed",
        "a damaged PNG behind a good header is reported without its path",
        LOCAL_DATA_PY,
        "        bad = _first_undecodable(ds.file_paths)\n",
        "        bad = None\n",
        (FOLDER_JUNK_PNG,),
    ),
    Mutant(
        "empty-class-folder-accepted",
        "a class folder without images becomes a class the network never sees",
        LOCAL_DATA_PY,
        "    for name in names:\n        if not any(",
        "    for name in []:\n        if not any(",
        (FOLDER_EMPTY_CLASS,),
    ),
    Mutant(
        "test-only-class-dropped",
        "a test class absent from train is silently dropped (Keras's subset rule)",
        LOCAL_DATA_PY,
        "    if names != test_names:\n",
        "    if not set(names) <= set(test_names):\n",
        (FOLDER_TEST_ONLY_CLASS,),
    ),
    Mutant(
        "negative-variance-accepted",
        "a final.npz with a negative BatchNorm moving variance loads as a good checkpoint",
        CHECKPOINTS,
        "    impossible = impossible_values(arrays) if finite else []\n",
        "    impossible = []\n",
        (NEGATIVE_VARIANCE,),
    ),
    Mutant(
        "finished-stage-outputs-unprobed",
        "a final.npz of finite weights whose logits overflow is loaded and exported",
        PROBLEMS,
        "    if not all(np.all(np.isfinite(keras.ops.convert_to_numpy(o))) for o in outputs):\n",
        "    if False:\n",
        (NON_FINITE_OUTPUTS,),
    ),
    Mutant(
        "probe-failure-keeps-bad-weights",
        "a stage whose final.npz was refused for its outputs is retrained from the refused weights",
        PROBLEMS,
        '        ckpt.assign_arrays("model", problem.trainable.variables, before, "the variables before loading")\n',
        "",
        (NON_FINITE_OUTPUTS,),
    ),
    Mutant(
        "missing-config-field-defaulted",
        "a config.json without seed resumes with the default seed",
        WORKDIR_PY,
        "    missing = schema.missing_fields(TrainConfig, values)\n",
        "    missing = []\n",
        (MISSING_SEED,),
    ),
    Mutant(
        "missing-grouped-field-defaulted",
        "a field deleted inside its group (optim.lr) is defaulted as long as the group is there",
        SCHEMA_PY,
        "        if node is _ABSENT and leaf.flag not in values:\n",
        "        if leaf.path[0] not in values and leaf.flag not in values:\n",
        (MISSING_GROUPED_LR,),
    ),
    Mutant(
        "finite-checked-before-cast",
        "float64 pixels of 1e300 pass the client's check and reach the graph as Inf in float32",
        SERVING_INPUTS,
        "        if not np.all(np.isfinite(cast)):\n",
        "        if not np.all(np.isfinite(images)):\n",
        (CLIENT_1E300,),
    ),
    Mutant(
        "ragged-images-bare-value-error",
        "a ragged list of images raises NumPy's bare ValueError",
        SERVING_INPUTS,
        '    except (ValueError, TypeError) as e:  # NumPy >= 1.24: "inhomogeneous shape"\n',
        '    except KeyError as e:  # NumPy >= 1.24: "inhomogeneous shape"\n',
        (CLIENT_RAGGED,),
    ),
    Mutant(
        "damaged-saved-model-bare-error",
        "a truncated saved_model.pb raises protobuf's DecodeError",
        CLIENTS,
        "        except Exception as e:  # a damaged SavedModel is data: protobuf, TF and Python raise many types\n",
        "        except KeyError as e:  # a damaged SavedModel is data: protobuf, TF and Python raise many types\n",
        (DAMAGED_PB,),
    ),
    Mutant(
        "stopped-early-unrecorded",
        "a stage a callback stopped is recorded as a full one",
        "layerwise/training/finishing.py",
        '            "stopped_early": len(history) < problem.epochs,',
        '            "stopped_early": False,',
        (STOPPED_EARLY,),
    ),
    # ---- issue 22: restore without apps
    Mutant(
        "network-not-saved",
        "fit does not save the network with the run: restore_run(workdir) and apps.export need build_network",
        FIT_PY,
        "        not_saved = write_network(writes_to, given_network, data)  # restore_run's source\n",
        "        not_saved = None\n",
        (RESTORE_UINT8, RESTORE_FRESH),
    ),
    Mutant(
        "uint8-signature-for-float-images",
        "an export of a run on float images offers a uint8 signature that only casts (off by up to 0.9)",
        RUN_EXPORTS_PY,
        "    uint8 = run.data.uint8_pixels  # no uint8 signature for float images of unknown scale\n",
        "    uint8 = True\n",
        (RESTORE_FRESH,),
    ),
    Mutant(
        "uint8-arrays-get-no-uint8-signature",
        "a run of fit on uint8 arrays is exported without its uint8 signature",
        DATA_BASE_PY,
        "        self.uint8_pixels = normalize or train[0].dtype == np.uint8\n",
        "        self.uint8_pixels = normalize\n",
        (RESTORE_UINT8,),
    ),
    Mutant(
        "network-file-not-checked-to-rebuild",
        "a network whose config rebuilds other weights (a get_config missing an argument) is saved anyway: "
        "restore_run fails on it later instead of the run saying so at once",
        NETWORK_FILE_PY,
        "        if _weight_shapes(rebuilt) != _weight_shapes(models):\n",
        "        if False:\n",
        (RESTORE_UNREBUILDABLE,),
    ),
    # ---- issue 22: per-stage tuning
    Mutant(
        "per-stage-lr-ignored",
        "every stage trains with the run's lr, not its stage_overrides lr",
        TRAINER_PY,
        "        lr = self.config.for_stage(problem.stage).optim.lr\n",
        "        lr = self.config.optim.lr\n",
        (PER_STAGE_RUN,),
    ),
    Mutant(
        "per-stage-weight-decay-ignored",
        "every stage trains with the run's weight decay, not its stage_overrides weight_decay",
        TRAINER_PY,
        "        weight_decay = self.config.for_stage(problem.stage).optim.weight_decay\n",
        "        weight_decay = self.config.optim.weight_decay\n",
        (PER_STAGE_RUN,),
    ),
    Mutant(
        "per-stage-epochs-ignored",
        "every stage trains epochs_per_stage epochs, not its stage_overrides epochs",
        TRAINER_PY,
        "            return stage_problem(self.network, j, head, epochs[j], extras,",
        "            return stage_problem(self.network, j, head, self.config.epochs_per_stage, extras,",
        (PER_STAGE_RUN,),
    ),
    Mutant(
        "per-stage-head-ignored",
        "every stage (and its restored run) gets the run's head, not its stage_overrides aux_width/aux_conv_layers",
        PROBLEMS_PY,
        "        aux, final = self.per_stage[j] if j < len(self.per_stage) else (self.aux, self.final_aux)\n",
        "        aux, final = self.aux, self.final_aux\n",
        (PER_STAGE_RUN,),
    ),
    Mutant(
        "stage-override-values-unchecked",
        "a stage's override values are not validated (lr -1 trains)",
        CONFIG_TRAIN_PY,
        "                self.for_stage(j).validate(validation_data)\n",
        "                self.for_stage(j)\n",
        (PER_STAGE_BAD_LR,),
    ),
    Mutant(
        "stage-override-count-unchecked",
        "stage_overrides with more objects than stages train (the extra ones ignored)",
        CONFIG_TRAIN_PY,
        "        if count and count != num_stages:\n",
        "        if count and count < num_stages:\n",
        (PER_STAGE_COUNT,),
    ),
    # ---- issue 24: fidelity
    Mutant(
        "local-vgg-loss-reads-dropout",
        "every conv stage of vgg8b/vgg11b ends in dropout again: the local losses read dropped-out features",
        LOCAL_VGG,
        '        return _activation(activation, f"conv{i}_act")(x)\n',
        '        return keras.layers.Dropout(0.5)(_activation(activation, f"conv{i}_act")(x))\n',
        (PRE_DROPOUT,),
    ),
    Mutant(
        "local-vgg-element-dropout",
        "conv features are dropped element by element, not as whole channels (their Dropout2d)",
        LOCAL_VGG,
        "keras.layers.SpatialDropout2D(rate, name=name) if spatial else",
        "keras.layers.Dropout(rate, name=name) if spatial else",
        (PRE_DROPOUT,),
    ),
    Mutant(
        "vgg11b3x-dim-in-decoder-2048",
        "the vgg11b (3x) preset keeps 2048 features in its decoders instead of the authors' default 4096",
        LOCAL_PRESETS_PY,
        'augment="crop_flip_cutout", aux_max_features=4096,',
        'augment="crop_flip_cutout",',
        (DIM_IN_DECODER,),
    ),
    Mutant(
        "padded-pooling-ignored",
        "aux_pooling padded averages every row adaptively (rows 24-27 at 28 pixels are read)",
        HEADS,
        '        if spec.pooling == "padded" and pooled != tuple(x.shape[1:3]):',
        '        if False and pooled != tuple(x.shape[1:3]):',
        (POOLING_28,),
    ),
    Mutant(
        "infopro-resnet110-numbers",
        "the InfoPro presets quote ResNet-110's and other rows' numbers (6.42 / 7.30 / 8.13 / 8.71)",
        LOCAL_PRESETS_PY,
        "INFOPRO_RESNET32_ERRORS = {2: 7.76, 4: 8.58, 8: 11.13, 16: 12.75}",
        "INFOPRO_RESNET32_ERRORS = {2: 6.42, 4: 7.30, 8: 8.13, 16: 8.71}",
        (INFOPRO_NUMBERS,),
    ),
    Mutant(
        "pruned-finetune-5-epochs",
        "cifar10_k3_pruned fine-tunes the pruned head 5 epochs, not the paper's 20",
        EXPERIMENTS_PY,
        'prune_criterion="taylor", prune_finetune_epochs=20,',
        'prune_criterion="taylor", prune_finetune_epochs=5,',
        (BASELINES,),
    ),
    Mutant(
        "nesterov-ignored",
        "--nesterov builds plain-momentum SGD",
        OPTIM_PY,
        "momentum=config.momentum, nesterov=config.nesterov)",
        "momentum=config.momentum)",
        (NESTEROV,),
    ),
    Mutant(
        "cosine-warmup-off-by-one",
        "the cosine warm-up starts one epoch late (epoch 1 is not at warmup_lr)",
        SCHEDULES,
        "value * (e - 1) / warmup_epochs + warmup_lr * (warmup_epochs + 1 - e) / warmup_epochs",
        "value * e / warmup_epochs + warmup_lr * (warmup_epochs - e) / warmup_epochs",
        (COSINE,),
    ),
    Mutant(
        "reflect-crop-zero-padded",
        "reflect_crop pads with zeros like crop",
        AUGMENT,
        'mode = "REFLECT" if policy.startswith("reflect_") else "CONSTANT"',
        'mode = "CONSTANT"',
        (REFLECT,),
    ),
    Mutant(
        "infopro-preset-plain-shortcuts",
        "the InfoPro presets keep option-A shortcuts instead of the authors' 1x1 conv + BN projections",
        LOCAL_PRESETS_PY,
        '"model_options": {"stage_granularity": "block", "shortcut": "B"},',
        '"model_options": {"stage_granularity": "block"},',
        (INFOPRO_RECIPE,),
    ),
    Mutant(
        "infopro-decoder-half-pixel",
        "InfoPro's decoder upsamples at half-pixel centres instead of with the corners aligned",
        INFOPRO_HEADS_PY,
        "tf.compat.v1.image.resize_bilinear(inputs, self.size, align_corners=True)",
        "tf.compat.v1.image.resize_bilinear(inputs, self.size, align_corners=False, half_pixel_centers=True)",
        (INFOPRO_DECODER,),
    ),
    Mutant(
        "infopro-projection-pads-bottom-right",
        "the projection head's strided conv pads only bottom and right (Keras 'same'), shifting the grid",
        INFOPRO_HEADS_PY,
        'keras.layers.ZeroPadding2D(1, name=f"{name}_projection_pad")',
        'keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_projection_pad")',
        (INFOPRO_PROJECTION,),
    ),
    Mutant(
        "priority-lifo-oldest-first",
        "priority-LIFO serves the oldest of the least-used batches (FIFO among ties)",
        REPLAY_PY,
        "tf.where(slots < filled, self.uses * self.size + age, tf.int64.max)",
        "tf.where(slots < filled, self.uses * self.size + self.size - 1 - age, tf.int64.max)",
        (PRIORITY_LIFO,),
    ),
    Mutant(
        "priority-lifo-use-counts-ignored",
        "priority-LIFO ignores the use counts: always the freshest batch",
        REPLAY_PY,
        "        self.uses.scatter_nd_add([[slot]], tf.ones([1], tf.int64))",
        "        self.uses.scatter_nd_add([[slot]], tf.zeros([1], tf.int64))",
        (PRIORITY_LIFO,),
    ),
    Mutant(
        "aux-zero-init-ignored",
        "aux_zero_init leaves the aux head's linear layer at Keras's random initial weights",
        HEADS,
        '    initializer = "zeros" if spec.zero_init else "glorot_uniform"',
        '    initializer = "glorot_uniform"',
        (ZERO_INIT,),
    ),
    Mutant(
        "replay-age-counted-from-the-oldest",
        "the served-batch age is counted from the oldest slot, not from the last write",
        REPLAY_PY,
        "self.age_total.assign_add(tf.math.floormod(self.writes - 1 - slot, self.size))",
        "self.age_total.assign_add(tf.math.floormod(slot, self.size))",
        (REPLAY_STATS,),
    ),
    # ---- issue 24: golden values
    Mutant(
        "similarity-rms-not-std",
        "the similarity matrix reduces conv features to each channel's root mean square, not its std",
        SIMILARITY_PY,
        "        centred = z - tf.reduce_mean(z, axis=1, keepdims=True)",
        "        centred = z",
        (GOLDEN_SIM,),
    ),
    Mutant(
        "supcon-anchor-in-its-denominator",
        "the supervised contrastive loss keeps the anchor itself in its denominator",
        INFOPRO_HEADS_PY,
        "tf.reduce_sum(tf.exp(logits) * others, axis=1, keepdims=True)",
        "tf.reduce_sum(tf.exp(logits), axis=1, keepdims=True)",
        (GOLDEN_SUPCON,),
    ),
    Mutant(
        "infopro-bn-keras-epsilon",
        "InfoPro's decoder and projection BatchNorm use Keras's epsilon 1e-3, not PyTorch's 1e-5",
        INFOPRO_HEADS_PY,
        "INFOPRO_BN_EPSILON = 1e-5",
        "INFOPRO_BN_EPSILON = 1e-3",
        (GOLDEN_DECODER,),
    ),
    # ---- issue 26: roofline
    Mutant(
        "roofline-valid-output-ignores-stride",
        "a valid convolution's output size ignores its stride",
        ROOFLINE_PY,
        "        return (n - d * (k - 1) - 1) // s + 1",
        "        return (n - d * (k - 1) - 1) + 1",
        (ROOFLINE_WALK,),
    ),
    Mutant(
        "roofline-train-flops-two-passes",
        "a conv's forward and backward passes count twice its forward FLOPs, not three times",
        ROOFLINE_PY,
        "        return 3 * self.forward_flops()",
        "        return 2 * self.forward_flops()",
        (ROOFLINE_WALK,),
    ),
    Mutant(
        "roofline-every-conv-input-gradient",
        "every trainable conv is timed with an input gradient, also the first, whose input needs none",
        ROOFLINE_PY,
        "if c.after_trainable else [FORWARD, KERNEL_GRADIENT]",
        "if True else [FORWARD, KERNEL_GRADIENT]",
        (ROOFLINE_PASSES, ROOFLINE_REPORT),
    ),
    Mutant(
        "roofline-limit-arithmetic-mean",
        "a stage's limit is the plain mean of its convs' rates, not their FLOPs over their time",
        ROOFLINE_PY,
        "    return flops / 1e9 / sum(seconds[conv_key(c)] for c in convs)",
        "    return sum(c[\"step_flops\"] / 1e9 / seconds[conv_key(c)] for c in convs) / len(convs)",
        (ROOFLINE_PASSES,),
    ),
    Mutant(
        "roofline-nested-models-skipped",
        "the walk skips the convs of nested models (a staged network's stages and heads)",
        ROOFLINE_PY,
        "            _walk(layer, batch, f\"{prefix}{layer.name}/\", seen_trainable, found)\n",
        "",
        (ROOFLINE_WALK, ROOFLINE_REPORT),
    ),
    # ---- issue 24: fidelity s29
    Mutant(
        "infopro-target-mean-std-swapped",
        "the de-normalised target multiplies by the mean and adds the std",
        INFOPRO_HEADS_PY,
        "return images * tf.constant(std, tf.float32) + tf.constant(mean, tf.float32)",
        "return images * tf.constant(mean, tf.float32) + tf.constant(std, tf.float32)",
        (DENORMALISED_TARGET, GOLDEN_PARTIAL),
    ),
    Mutant(
        "infopro-loss-ignores-its-statistics",
        "InfoPro's loss min-max stretches the target although it holds the data's mean and std",
        FIDELITY_S29_LOSSES_PY,
        "statistics = (self.image_mean, self.image_std) if self.image_mean else (None, None)",
        "statistics = (None, None)",
        (INFOPRO_STATISTICS,),
    ),
    Mutant(
        "fit-does-not-record-image-statistics",
        "layerwise.fit leaves InfoPro's mean and std empty: config.json records none and the target is min-max",
        FIDELITY_S29_FIT_PY,
        "    config = with_image_statistics(config, data.unit_statistics())",
        "    config = config",
        (INFOPRO_RUN_STATISTICS,),
    ),
    Mutant(
        "random-workers-ignore-the-ratios",
        "the random schedule draws every stage equally often: the slowed stage is not slowed",
        FIDELITY_S29_REPLAY_PY,
        "weights = tf.constant([1.0, *ratios[1:]], tf.float64)",
        "weights = tf.constant([1.0] * len(ratios), tf.float64)",
        (WORKER_PROBABILITIES, RANDOM_WORKERS),
    ),
    Mutant(
        "random-workers-one-draw-per-batch",
        "the random schedule draws once per batch instead of until stage 0 comes up again",
        FIDELITY_S29_REPLAY_PY,
        "        while drawn != 0:\n",
        "        if drawn != 0:\n",
        (RANDOM_WORKERS,),
    ),
    Mutant(
        "replay-schedule-default-rounds",
        "the replay-buffer mode steps in fixed rounds unless asked for DGL's random workers",
        FIDELITY_S29_GROUPS_PY,
        '"random", "--replay_buffer: which stage steps when',
        '"rounds", "--replay_buffer: which stage steps when',
        (RANDOM_DEFAULT,),
    ),
    Mutant(
        "random-workers-draws-not-checkpointed",
        "the count of worker draws is not training state: a resumed run draws the first run's workers again",
        FIDELITY_S29_REPLAY_PY,
        "+ [round_index, draws] + stage_steps",
        "+ [round_index] + stage_steps",
        (ASYNC_RESUMES,),
    ),
    Mutant(
        "layerwise-cnn-maxpool-is-space-to-depth",
        "downsampling='maxpool' still downsamples by space-to-depth (4x the channels into the conv)",
        FIDELITY_S29_LAYERWISE_CNN,
        'if downsampling == "space_to_depth"',
        "if True",
        (BUFFER_PRESET,),
    ),
    Mutant(
        "dgl-buffer-head-without-batchnorm",
        "the buffer experiment's MLP heads have no BatchNorm1d after their hidden layers",
        FIDELITY_S29_DGL_BUFFER,
        "            x = keras.layers.BatchNormalization(momentum=TORCH_BN_MOMENTUM, epsilon=TORCH_BN_EPSILON,\n"
        "                                                name=f\"{name}_bn{i}\")(x)\n",
        "",
        (BUFFER_PRESET,),
    ),
    Mutant(
        "workdir-check-ignores-recorded-statistics",
        "a workdir check takes the recorded image statistics even where the run brings other ones",
        FIDELITY_S29_WORKDIR_PY,
        "            if not wanted[name]:\n",
        "            if True:\n",
        (EARLY_WORKDIR_CHECK,),
    ),
    Mutant(
        "workdir-check-compares-unfilled-statistics",
        "the check before the data is read compares the statistics it has not filled yet: a resume is refused",
        FIDELITY_S29_WORKDIR_PY,
        "                wanted[name] = stored[name]\n",
        "                pass\n",
        (EARLY_WORKDIR_CHECK, INFOPRO_RUN_STATISTICS),
    ),
    # ---- issue 26: oneDNN default
    Mutant(
        "onednn-default-not-set",
        "layerwise decides oneDNN on but never sets the variable TensorFlow reads",
        ONEDNN_PY,
        '        environ[ENV] = "1"\n',
        "",
        (ONEDNN_DEFAULT, ONEDNN_REAL),
    ),
    Mutant(
        "onednn-user-value-overridden",
        "a value the user set is overwritten with layerwise's default",
        ONEDNN_PY,
        "    if ENV in environ:\n",
        "    if False:\n",
        (ONEDNN_KEPT, ONEDNN_REAL),
    ),
    Mutant(
        "bench-compare-reference-environment-dropped",
        "the reference command runs without the variables --compare gives it (e.g. the ISA cap)",
        "apps/speed_compare.py",
        "                          env={**os.environ, **(env or {})})",
        "                          env=None)",
        (ONEDNN_BENCH,),
    ),
    # ---- issue 23: package layering
    Mutant(
        "network-file-old-module-names",
        "a network.json written before the move to layerwise.nn names modules that no longer exist",
        NETWORK_FILE_PY,
        "        module = MOVED_MODULES.get(recorded, recorded)\n",
        "        module = recorded\n",
        (NETWORK_FILE_MOVES,),
    ),
    Mutant(
        "building-blocks-import-training",
        "a building block of layerwise.nn imports the training package above it (a package cycle)",
        PORTABLE,
        "from layerwise.nn.training_layers import DenseLogits, StopGradient\n",
        "from layerwise.nn.training_layers import DenseLogits, StopGradient\nfrom layerwise.training import split  # noqa: F401\n",
        (NO_UPWARD_IMPORTS, NO_PACKAGE_CYCLES),
    ),
    # ---- issue 23: precision decided once
    Mutant(
        "fit-precision-heads-only",
        "layerwise.fit computes only the heads in the run's precision, the network in the policy it was built in",
        TRAINER_PY,
        "        adopt_policy(network.stages, self.config.precision)",
        "        adopt_policy([], self.config.precision)",
        (SAME_POLICIES,),
    ),
    Mutant(
        "auto-precision-not-said",
        "precision auto is decided silently: the log does not say which policy was chosen, or why",
        PRECISION_PY,
        'return config.replace(precision=precision), f"precision: auto -> {precision} ({why})"',
        'return config.replace(precision=precision), ""',
        (SETTLE_SAYS_WHY, SAME_POLICIES),
    ),
    Mutant(
        "adopt-policy-overrides-chosen",
        "a layer the user built in another policy (float16) is switched to the run's",
        PRECISION_PY,
        'elif not isinstance(layer, keras.layers.InputLayer) and layer.dtype_policy.name == "float32":',
        "elif not isinstance(layer, keras.layers.InputLayer):",
        (KEEPS_OTHER_POLICY,),
    ),
    # ---- issue 23: training core (the epoch loop every mode shares)
    Mutant(
        "train-epochs-checkpoint-without-optimizer",
        "the shared epoch loop checkpoints the model but not the optimizer's state",
        TRAINER_PY,
        "**ckpt.optimizer_arrays(optimizer_variables), **arrays}",
        "**arrays}",
        (RESUME_MID,),
    ),
    Mutant(
        "train-epochs-ignores-stop",
        "the shared epoch loop trains on after a callback stopped the stage",
        TRAINER_PY,
        '            stop = record.pop("stop", None)\n',
        '            stop = record.pop("stop", None) and False\n',
        (STOPPED_EARLY,),
    ),
    # ---- issue 26: validation_freq
    Mutant(
        "validation-freq-ignored",
        "validation_freq is accepted but every epoch is evaluated",
        "layerwise/training/epoch.py",
        "evaluated = (epoch + 1) % self.options.validation_freq == 0 or epoch + 1 == problem.epochs",
        "evaluated = True",
        (FREQ_EVALUATES,),
    ),
    Mutant(
        "validation-freq-skips-last-epoch",
        "a stage's last epoch is left unevaluated when it is not an N-th epoch",
        "layerwise/training/epoch.py",
        "evaluated = (epoch + 1) % self.options.validation_freq == 0 or epoch + 1 == problem.epochs",
        "evaluated = (epoch + 1) % self.options.validation_freq == 0",
        (FREQ_EVALUATES,),
    ),
    Mutant(
        "validation-freq-with-keep-best-allowed",
        "validation_freq > 1 is taken with keep_best and the plateau schedule, which need every epoch's accuracy",
        "layerwise/config/run_options.py",
        "if self.validation_freq > 1 and needs:",
        "if False:",
        (FREQ_REFUSED,),
    ),
    Mutant(
        "validation-freq-dry-run-unchecked",
        "apps.train --dry_run does not check the run options",
        "apps/train.py",
        "    RunOptions().replace(**config_flags.given(RunOptions)).validate(config)\n",
        "",
        (FREQ_CLI,),
    ),
]
