"""The Python client against a live kp-coordinator (started by
python_client_test.sh; address and token file in KP_ADDR / KP_TOKEN_FILE).
No agent is registered, so submitted jobs stay QUEUED until cancelled."""
import io
import os
import unittest

import grpc

from kp_client import Client, KpError, job_spec


class PythonClientTest(unittest.TestCase):
    def setUp(self):
        self.kp = Client(os.environ["KP_ADDR"], token_file=os.environ["KP_TOKEN_FILE"], timeout=5)

    def tearDown(self):
        self.kp.close()

    def test_submit_list_get_cancel_watch(self):
        job = self.kp.submit(job_spec("py-tiny", config_yaml="model: {layers: 2}\n", steps=7, dp=2,
                                      precision="bf16", labels={"via": "python"}))
        self.assertTrue(job.job_id)
        self.assertEqual(job.state, "QUEUED")
        self.assertEqual((job.dp, job.total_steps), (2, 7))
        self.assertIn(job.job_id, [j.job_id for j in self.kp.list()])
        self.assertIn(job.job_id, [j.job_id for j in self.kp.list(states=["QUEUED"])])
        self.assertNotIn(job.job_id, [j.job_id for j in self.kp.list(states=["RUNNING"])])
        self.assertEqual(self.kp.get(job.job_id).name, "py-tiny")
        cancelled = self.kp.cancel(job.job_id, reason="test")
        self.assertEqual(cancelled.state, "CANCELLED")
        self.assertIn("test", cancelled.message)
        # The watch replays the history and ends because the job ended.
        out = io.StringIO()
        final = self.kp.watch(job.job_id, progress=True, file=out)
        self.assertEqual(final.state, "CANCELLED")
        self.assertTrue(final.done)
        states = [e.state for e in self.kp.events(job.job_id)]
        self.assertEqual(len(states), 3)  # SUBMITTED, QUEUED, CANCELLED
        with self.assertRaises(KpError) as err:
            self.kp.cancel(job.job_id)
        self.assertEqual(err.exception.code, grpc.StatusCode.FAILED_PRECONDITION)

    def test_errors_carry_codes_and_fields(self):
        with self.assertRaises(KpError) as err:
            self.kp.submit(job_spec("bad", config_yaml="x: 1\n", steps=5, dp=0))
        self.assertEqual(err.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(err.exception.message.startswith("spec.dp:"), err.exception.message)
        with self.assertRaises(KpError) as err:
            self.kp.get("j999999")
        self.assertEqual(err.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(ValueError):
            job_spec("x", steps=1)  # no config
        with self.assertRaises(ValueError):
            job_spec("x", config_yaml="a: 1", steps=1, precision="fp7")

    def test_wrong_token_is_unauthenticated(self):
        with Client(os.environ["KP_ADDR"], token="not-the-token") as bad:
            with self.assertRaises(KpError) as err:
                bad.list()
        self.assertEqual(err.exception.code, grpc.StatusCode.UNAUTHENTICATED)


if __name__ == "__main__":
    unittest.main(verbosity=2)
