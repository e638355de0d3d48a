from django.db import models


class Signup(models.Model):
    email = models.EmailField()
    created = models.DateTimeField(auto_now_add=True)
    welcomed = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.email
